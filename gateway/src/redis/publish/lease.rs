//! The lease: one publisher writes to a Redis at a time, and a standby takes over when it lapses.

use super::Publisher;
use crate::redis::conn::Conn;

/// How long a publisher's hold on Redis lasts unless renewed (it renews with every heartbeat,
/// every 250 ms): a second publisher waits this long after the first stops renewing, ms.
pub const LEASE_MS: u64 = 1_500;

/// Why the lease could not be held.
pub(super) enum LeaseErr {
    /// Another publisher holds it.
    Taken(String),
    /// The lease's node (index) failed.
    Node(usize, String),
}

/// Takes or renews the lease `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms unless another holds it:
/// 1 if held, else the holder.
const LEASE_SCRIPT: &[u8] = b"local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
    return v";

/// Gives the lease `KEYS[1]` up if `ARGV[1]` holds it.
const RELEASE_SCRIPT: &[u8] =
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

impl Publisher {
    /// Runs a lease script on the lease key's node with this publisher's ID (and `ttl_ms`),
    /// or where an ASK sends it; `None` while not connected to that node. Else the node and
    /// the reply: `None` for 1, otherwise what it said (for [`LEASE_SCRIPT`], the holder).
    fn lease_script(
        &mut self,
        script: &[u8],
        ttl_ms: Option<&str>,
    ) -> Option<(usize, Result<Option<String>, String>)> {
        let key = self.keys.lease();
        let link = self.link.as_mut()?;
        let k = link.topo.node_of(key.as_bytes());
        let mut args: Vec<&[u8]> = vec![b"EVAL", script, b"1", key.as_bytes(), self.id.as_bytes()];
        args.extend(ttl_ms.map(str::as_bytes));
        let t = self.cfg.timeout;
        let run = |c: &mut Conn| {
            c.call(&args, t, |r| match r {
                crate::redis::resp::Reply::Int(1) => None,
                r => Some(String::from_utf8_lossy(r.bytes().unwrap_or(b"?")).into_owned()),
            })
        };
        let r = run(link.conns[k].as_mut()?);
        // the lease key's slot half-moved, the key with it: run it where the key is now
        let Some(to) = r
            .as_ref()
            .err()
            .and_then(|e| crate::redis::cluster::ask_target(e))
        else {
            return Some((k, r));
        };
        // that node down or unreachable: the lease is not checked meanwhile
        let kk = link.topo.index_of(to);
        let c = link.ask_conn(to, t, &self.cfg.access)?;
        let r = c.call(&[b"ASKING"], t, |_| ()).and_then(|()| run(c));
        match kk {
            Some(kk) => Some((kk, r)),
            // the side connection (a node in no slot map yet) failing costs only itself
            None if r.is_err() => {
                link.drop_side(to);
                None
            }
            None => Some((k, r)),
        }
    }

    /// Takes or renews this publisher's lease on the Redis it writes (the key `P:publisher`,
    /// [`LEASE_MS`]): one publisher writes at a time, and a second one started beside it
    /// waits, then takes over once the first stops renewing. While the lease's node is down
    /// the lease is not checked (the other nodes are still written).
    pub(super) fn hold_lease(&mut self) -> Result<(), LeaseErr> {
        match self.lease_script(LEASE_SCRIPT, Some(&LEASE_MS.to_string())) {
            None | Some((_, Ok(None))) => Ok(()),
            Some((_, Ok(Some(holder)))) => Err(LeaseErr::Taken(format!(
                "another publisher ({holder}) holds {}: one publisher writes at a time; \
                 this one takes over within {LEASE_MS} ms of that one stopping",
                self.keys.lease()
            ))),
            Some((k, Err(e))) => match crate::redis::cluster::moved_target(&e) {
                // the lease key's slot moved: renewed on the next heartbeat, on the new map
                Some(to) => {
                    self.remap = Some(to);
                    Ok(())
                }
                None => Err(LeaseErr::Node(k, e)),
            },
        }
    }

    /// Gives up for a lease held by another, or drops the lease's node when it failed.
    pub(super) fn lease_failed(&mut self, e: LeaseErr) {
        match e {
            LeaseErr::Taken(e) => self.fail(e),
            LeaseErr::Node(k, e) => self.node_failed(k, e),
        }
    }

    /// Gives up the lease (a clean stop), so a standby takes over at once.
    pub fn release(&mut self) {
        let _ = self.lease_script(RELEASE_SCRIPT, None);
    }
}
