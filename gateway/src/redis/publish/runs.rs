//! Bar writes: each list's run of bars ([`regroup`](super::regroup)) in one `RPUSH`, with one
//! `HSET` of each venue's newest bar in it and a trim only when the list may pass 600, then a
//! publish of each bar that is not restored (restored bars are not published: the gateways that
//! were up have them). A group's fate is its push's ([`barfate`](super::barfate)), the same for
//! each of its bars: appended, refused, redirected (MOVED waits for the new map, ASK is written
//! where the list is now, then published again) or, with no reply, back in its list's place to
//! be checked after the reconnection.

use super::Publisher;
use super::barfate::{Aside, Cmd, Fate};
use super::bars::{LIST_KEEP, PendingBar};
use super::regroup::List;
use crate::redis::Keys;
use crate::redis::conn::Conn;
use crate::redis::resp;

/// Bars a flush writes at most (then quotes go, then the next). Grouped, a restored bar costs
/// Redis a fraction of a command. Measured (`bench redis`: 3M bars kept of a 21M-record log,
/// 5,000 symbols, quotes at 50,000 changes/s): 1,024 a flush restored them in 8.0-8.8 s with
/// the quotes' hop p99 at 4.3 ms meanwhile; 512 took 11.2 s for the same p99. One bar a command
/// (64 a flush) took 30-43 s, p99 1.9-3.4 ms.
pub const GROUPED_PER_FLUSH: usize = 1024;

/// Commands a flush of bars sends at most (a group's push, trim and hash write, and each bar's
/// publish; `publish/regroup.rs`), the first group's first bar whatever it costs. Redis
/// runs one client's commands at a time and the publisher waits for their replies, so a big
/// batch holds up every quote behind it: with 4,000 one-second bars closing at each second's
/// start (`bench redis`, each in a group of its own), 4,096 bars a flush made the quote hop's
/// p99 22 ms, 64 (256 commands) 0.77-0.86 ms against 0.66 ms without bars.
pub const COMMANDS_PER_FLUSH: usize = 256;

/// Bars read ahead at most (a restore's, a backlog's): the lists' groups are long when many are
/// held (the log interleaves every list's bars: 131,072 hold about 26 of each of 5,000
/// symbols' 1-second bars). They are written once half of it is held, or when no more are
/// coming.
pub const REGROUP_WINDOW: usize = 1 << 17;

/// Queues one group's commands on `c`: `RPUSH` of every bar, `LTRIM` when `trim`, `HSET` of each
/// venue's newest bar in the group; each after `ASKING` when `asking`. Returns, per reply owed,
/// the command of the group it answers (`None`: an `ASKING`).
fn queue_group(
    c: &mut Conn,
    keys: &Keys,
    bars: &[PendingBar],
    trim: bool,
    asking: bool,
) -> Vec<Option<Cmd>> {
    let Some(first) = bars.first() else {
        return Vec::new();
    };
    let sym = first.rec.symbol_str();
    let key = keys.bars(&sym, first.rec.interval_s);
    let mut owed = Vec::with_capacity(6);
    let ask = |c: &mut Conn, owed: &mut Vec<Option<Cmd>>| {
        if asking {
            c.queue(&[b"ASKING"]);
            owed.push(None);
        }
    };
    ask(c, &mut owed);
    c.queue_parts(2 + bars.len(), |out| {
        resp::bulk(out, b"RPUSH");
        resp::bulk(out, key.as_bytes());
        for p in bars {
            resp::bulk(out, &p.rec.to_bytes());
        }
    });
    owed.push(Some(Cmd::Push));
    if trim {
        ask(c, &mut owed);
        c.queue(&[b"LTRIM", key.as_bytes(), b"-600", b"-1"]);
        owed.push(Some(Cmd::Trim));
    }
    // each venue's newest bar of the group (not a revision), for a publisher checking it later
    let mut fields: Vec<(String, String)> = Vec::new();
    for p in bars.iter().rev() {
        if let Some([_, venue, newest]) = super::barpos::newest_names(keys, p)
            && !fields.iter().any(|(v, _)| *v == venue)
        {
            fields.push((venue, newest));
        }
    }
    if !fields.is_empty() {
        ask(c, &mut owed);
        let hash = keys.bars_newest(&sym, first.rec.interval_s);
        c.queue_parts(2 + 2 * fields.len(), |out| {
            resp::bulk(out, b"HSET");
            resp::bulk(out, hash.as_bytes());
            for (venue, newest) in &fields {
                resp::bulk(out, venue.as_bytes());
                resp::bulk(out, newest.as_bytes());
            }
        });
        // (its reply counts as the trim's)
        owed.push(Some(Cmd::Trim));
    }
    owed
}

/// Queues `publish` (`PUBLISH`, or `SPUBLISH` in a cluster) of each bar of a group (one
/// list's) that is not restored, on its symbol's channel; returns how many.
fn queue_publishes(c: &mut Conn, keys: &Keys, publish: &[u8], bars: &[PendingBar]) -> usize {
    let Some(first) = bars.first() else {
        return 0;
    };
    let ch = keys.bars_channel(&first.rec.symbol_str());
    let mut n = 0;
    for p in bars.iter().filter(|p| !p.quiet) {
        c.queue(&[publish, ch.as_bytes(), &p.rec.to_bytes()]);
        n += 1;
    }
    n
}

/// What the replies to a batch of bar writes said ([`read_fates`]).
pub(super) struct Replies {
    /// Each run's fate.
    pub fate: Vec<Fate>,
    /// The list's length each run's `RPUSH` answered.
    pub lens: Vec<Option<u32>>,
    /// Why a trim or publish was refused (the first reason).
    pub aside: Option<String>,
    /// A node a MOVED named: the slot map to follow.
    pub remap: Option<std::net::SocketAddr>,
    /// The first node whose connection failed, and why.
    pub failed: Option<(usize, String)>,
}

/// Flushes every node's batch and reads its replies: `tied[k]` names, for each reply node `k`
/// owes for the batch, the entry it answers (of `n`) and its command (`None`: none to take).
/// Replies owed from before the batch are not the bars'.
pub(super) fn read_fates(
    link: &mut super::Link,
    tied: &[Vec<(usize, Option<Cmd>)>],
    n: usize,
    t: std::time::Duration,
) -> Replies {
    let mut r = Replies {
        fate: vec![Fate::Unknown; n],
        lens: vec![None; n],
        aside: None,
        remap: None,
        failed: None,
    };
    for (k, conn) in link.conns.iter_mut().enumerate() {
        let c = conn.as_mut().expect("every node is up");
        let before = c.owed - tied[k].len();
        let read = c.flush().and_then(|()| {
            c.read_each_reply(std::time::Instant::now() + t, |i, reply| {
                let Some(&(j, Some(cmd))) = i.checked_sub(before).and_then(|i| tied[k].get(i))
                else {
                    return;
                };
                if let (Cmd::Push, resp::Reply::Int(len)) = (cmd, reply) {
                    r.lens[j] = u32::try_from(*len).ok();
                }
                match r.fate[j].reply(cmd, reply.error().as_deref()) {
                    Aside::Nothing => {}
                    Aside::Remap(to) => r.remap = Some(to),
                    Aside::Refused(why) => drop(r.aside.get_or_insert(why)),
                }
            })
        });
        if let Err(e) = read {
            r.failed.get_or_insert((k, e));
        }
    }
    r
}

/// Writes `bars` (one list's, in order) on `to`, the node an ASK named, each command after
/// `ASKING`: the push, the trim and each venue's newest bar. Returns their fate, the push's
/// reply's; a connection that failed is noted in `failed` when it is a node of the map, and
/// dropped when it is a side connection. (`how`: the key names, credentials and timeout.)
pub(super) fn write_asked(
    link: &mut super::Link,
    how: (&Keys, &crate::redis::conn::Access, std::time::Duration),
    to: std::net::SocketAddr,
    bars: &[PendingBar],
    failed: &mut Option<(usize, String)>,
) -> Fate {
    let (keys, access, t) = how;
    let Some(c) = link.ask_conn(to, t, access) else {
        return Fate::Unknown;
    };
    let owed = queue_group(c, keys, bars, true, true);
    let before = c.owed - owed.len();
    let mut there = Fate::Unknown;
    let read = c.flush().and_then(|()| {
        c.read_each(std::time::Instant::now() + t, |i, e| {
            if let Some(Some(cmd)) = i.checked_sub(before).and_then(|i| owed.get(i)) {
                drop(there.reply(*cmd, e));
            }
        })
    });
    if let Err(e) = read {
        match link.topo.index_of(to) {
            Some(k) => drop(failed.get_or_insert((k, e))),
            None => link.drop_side(to),
        }
    }
    there
}

impl Publisher {
    /// Whether the bars held are to be written now: enough for long groups (half the window),
    /// or no more coming soon (nothing more of a backlog or a restore to read or check).
    pub(super) fn groups_due(&self) -> bool {
        if self.regroup.is_empty() {
            return false;
        }
        let held = self.regroup.len() + self.bars_pending.len();
        let window = REGROUP_WINDOW.min(self.cfg.max_pending_bars).max(2);
        // (a read due now: the last one read as much as it could)
        let reading_on = self.bar_scan.is_some()
            || std::time::Instant::now() >= self.next_bar_poll
            || self.bars_pending.front().is_some_and(|p| p.quiet)
            || self
                .bar_tail
                .as_ref()
                .is_some_and(|t| self.bar_sync.restoring(t.log(), t.offset()));
        held >= window / 2 || !reading_on
    }

    /// Writes up to [`GROUPED_PER_FLUSH`] bars (or [`COMMANDS_PER_FLUSH`] commands), a list's
    /// run a push, each bar not restored published after it (every node up). Returns false
    /// when a node failed (it is dropped).
    pub(super) fn flush_groups(&mut self) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let t = self.cfg.timeout;
        let publish: &[u8] = if link.topo.cluster {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        let groups = self
            .regroup
            .take(self.cfg.bars_per_flush, COMMANDS_PER_FLUSH);
        // per node, what each reply answers: (group, command), in the order they were queued
        let mut tied: Vec<Vec<(usize, Option<Cmd>)>> = vec![Vec::new(); link.conns.len()];
        for (g, bars) in groups.iter().enumerate() {
            let list: List = (bars[0].rec.symbol, bars[0].rec.interval_s);
            let key = self.keys.bars(&bars[0].rec.symbol_str(), list.1);
            let k = link.topo.node_of(key.as_bytes());
            let c = link.conns[k].as_mut().expect("every node is up");
            // a list known short enough needs no trim
            let trim = match self.list_len.get_mut(&list) {
                Some(len) if *len as usize + bars.len() <= LIST_KEEP as usize => {
                    *len += bars.len() as u32;
                    false
                }
                _ => true,
            };
            let owed = queue_group(c, &self.keys, bars, trim, false);
            tied[k].extend(owed.into_iter().map(|cmd| (g, cmd)));
            // then each bar on its symbol's channel, appended first
            let n = queue_publishes(c, &self.keys, publish, bars);
            tied[k].extend(std::iter::repeat_n((g, Some(Cmd::Publish)), n));
        }
        let Replies {
            mut fate,
            lens,
            aside,
            remap,
            mut failed,
        } = read_fates(link, &tied, groups.len(), t);
        if remap.is_some() {
            self.remap = remap;
        }
        // a list whose slot is half-moved: written where it is now, after ASKING, then its bars
        // published again (the first publish came before they were in)
        for (f, bars) in fate.iter_mut().zip(&groups) {
            let Fate::Asked(to) = *f else { continue };
            let there = write_asked(
                link,
                (&self.keys, &self.cfg.access, t),
                to,
                bars,
                &mut failed,
            );
            if let Fate::Moved(to) = there {
                self.remap = Some(to);
            }
            if !there.settled() {
                continue;
            }
            self.stats.asked += 1;
            *f = there;
            let key = self
                .keys
                .bars(&bars[0].rec.symbol_str(), bars[0].rec.interval_s);
            let k = link.topo.node_of(key.as_bytes());
            let c = link.conns[k].as_mut().expect("every node is up");
            if queue_publishes(c, &self.keys, publish, bars) > 0
                && let Err(e) = c.flush().and_then(|()| super::read_owed(c, t))
            {
                failed.get_or_insert((k, e));
            }
        }
        if let Some(why) = aside {
            eprintln!("gateway publish: bars were appended but a trim or publish refused: {why}");
        }
        // (how many, and the first list's key and reason)
        let mut refused: Option<(usize, String, String)> = None;
        for ((bars, f), len) in groups.into_iter().zip(fate).zip(lens) {
            let list: List = (bars[0].rec.symbol, bars[0].rec.interval_s);
            match f {
                Fate::Appended => {
                    if let Some(len) = len {
                        self.list_len.insert(list, len);
                    }
                    self.stats.bars += bars.len() as u64;
                }
                Fate::Refused(why) => {
                    self.stats.bars_refused += bars.len() as u64;
                    let first = || (0, self.keys.bars(&bars[0].rec.symbol_str(), list.1), why);
                    let r = refused.get_or_insert_with(first);
                    r.0 += bars.len();
                }
                // waits: for the node, the new map, or the next flush (asked again)
                _ => {
                    // what Redis holds of the list is not known: it is trimmed next time
                    self.list_len.remove(&list);
                    self.regroup.put_back(bars);
                }
            }
        }
        if let Some((n, key, why)) = refused {
            eprintln!("gateway publish: Redis refused {n} bars (dropped); the first, {key}: {why}");
        }
        if let Some((k, e)) = failed {
            self.node_failed(k, e);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::barsync;
    use super::*;

    /// A connection to a listener here, and the listener's end, to read what it was sent.
    fn pair() -> (Conn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let t = std::time::Duration::from_secs(5);
        let c = Conn::connect(l.local_addr().unwrap(), t, t, &Default::default()).unwrap();
        let (peer, _) = l.accept().unwrap();
        peer.set_read_timeout(Some(t)).unwrap();
        (c, peer)
    }

    fn sent(c: &mut Conn, peer: &mut std::net::TcpStream) -> String {
        use std::io::Read;
        c.flush().unwrap();
        drop(c.set_nonblocking(false));
        let mut got = vec![0u8; 64 * 1024];
        let n = peer.read(&mut got).unwrap();
        String::from_utf8_lossy(&got[..n]).into_owned()
    }

    #[test]
    fn a_group_is_one_push_one_trim_at_most_and_one_hash_write() {
        let keys = Keys::new("md");
        let (mut c, mut peer) = pair();
        let day_log = 1_764_417_600_000_000_000;
        let mut b = [0u8; book::barlog::RECORD];
        b[..8].copy_from_slice(b"AAPL    ");
        b[10] = 1;
        let mut bars = Vec::new();
        for (k, venue) in [(1u64, 0u16), (2, 5), (3, 0)] {
            let mut rec = book::barlog::record_from_bytes(&b);
            rec.channel = venue;
            rec.bar.start_ns = k;
            bars.push(PendingBar {
                rec,
                log: day_log,
                at: k,
                quiet: true,
                check: false,
            });
        }
        let owed = queue_group(&mut c, &keys, &bars, true, false);
        assert_eq!(owed, [Some(Cmd::Push), Some(Cmd::Trim), Some(Cmd::Trim)]);
        assert_eq!(c.owed, 3);
        let out = sent(&mut c, &mut peer);
        let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
        let list = bulk("md:{AAPL}:bars:1");
        assert!(
            out.starts_with(&format!("*5\r\n$5\r\nRPUSH\r\n{list}")),
            "{out}"
        );
        assert_eq!(out.matches("RPUSH").count(), 1);
        let trim = format!("*4\r\n$5\r\nLTRIM\r\n{list}{}{}", bulk("-600"), bulk("-1"));
        assert!(out.contains(&trim), "{out}");
        // each venue's newest in one write: venue 0's is the third bar, venue 5's the second
        let day = barsync::day_of(day_log).unwrap();
        let (v0, v5) = (barsync::newest_text(day, 3), barsync::newest_text(day, 2));
        let hset = format!(
            "*6\r\n$4\r\nHSET\r\n{}{}{}{}{}",
            bulk("md:{AAPL}:bars:1:newest"),
            bulk("0"),
            bulk(&v0),
            bulk("5"),
            bulk(&v5)
        );
        assert!(out.ends_with(&hset), "{out}");
        // asked: each after ASKING; with no trim, no LTRIM
        let owed = queue_group(&mut c, &keys, &bars, false, true);
        assert_eq!(owed, [None, Some(Cmd::Push), None, Some(Cmd::Trim)]);
        let out = sent(&mut c, &mut peer);
        assert!(
            out.starts_with("*1\r\n$6\r\nASKING\r\n*5\r\n$5\r\nRPUSH"),
            "{out}"
        );
        assert_eq!(out.matches("ASKING").count(), 2);
        assert!(!out.contains("LTRIM"));
    }
}
