//! Where a key lives: Redis addresses (`redis://HOST:PORT`, a comma-separated seed list for a
//! cluster), key hash slots (CRC16/XMODEM of the key or of its `{hash tag}`, mod 16384) and the
//! cluster's slot map from `CLUSTER SLOTS`. A server without cluster support is one node owning
//! every slot.

use super::resp::Reply;
use std::net::{SocketAddr, ToSocketAddrs};

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster hashes keys with.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                crc << 1 ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key or a sharded channel: only the part inside the first `{...}` counts
/// when that part is not empty.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|o| {
        let rest = &key[o + 1..];
        let c = rest.iter().position(|&b| b == b'}')?;
        (c > 0).then(|| &rest[..c])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The first host of a URL when it is a name rather than an address (what TLS certificates
/// are checked against by default).
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |x| x.1);
    let first = rest.split(',').next()?.trim();
    let host = match first.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => first,
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    (!bare.is_empty() && bare.parse::<std::net::IpAddr>().is_err()).then_some(host)
}

/// Parses `redis://HOST:PORT[,HOST:PORT...]` (or `rediss://`, the same with TLS; the scheme
/// is optional; the port defaults to 6379).
pub fn parse_url(url: &str) -> Result<Vec<SocketAddr>, String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .unwrap_or(url);
    if rest.contains('@') || rest.contains('/') {
        return Err(format!(
            "{url}: only redis://HOST:PORT[,HOST:PORT...] (rediss:// for TLS) is supported (no database; a user and password go in a file given with --redis-auth-file)"
        ));
    }
    let mut v = Vec::new();
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let with_port = if part
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            part.to_string()
        } else {
            format!("{part}:6379")
        };
        let a = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {part}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {part}: no address"))?;
        v.push(a);
    }
    if v.is_empty() {
        return Err(format!("{url}: no Redis address"));
    }
    Ok(v)
}

/// Which node serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The masters, in the order first seen.
    pub nodes: Vec<SocketAddr>,
    /// Node index per slot (`u16::MAX`: no node).
    pub owner: Vec<u16>,
    /// A Redis Cluster (sharded pub/sub), or one plain server.
    pub cluster: bool,
    /// Which node (by cluster node ID, whatever address a client reaches it by) serves each
    /// slot, hashed: equal for every client of one slot map. 0 for a plain server.
    pub map_id: u64,
    /// Each node's cluster node ID, hashed (the same whatever address a client reaches it
    /// by); 0 for a plain server.
    pub ids: Vec<u64>,
}

/// FNV-1a, 64 bits.
fn fnv(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Most ranges [`Topology::map_text`] writes: a map cut into more (a cluster in the middle of a
/// resharding that moves scattered slots) is named by its ID alone.
pub const MAP_TEXT_RANGES: usize = 512;

impl Topology {
    /// One plain server owning everything.
    pub fn single(addr: SocketAddr) -> Topology {
        Topology {
            nodes: vec![addr],
            owner: vec![0; SLOTS],
            cluster: false,
            map_id: 0,
            ids: vec![0],
        }
    }

    /// The slot map as text, for the publisher's heartbeat: `FIRST-LAST:NODE` per run of slots
    /// served by one node (NODE its hashed ID in hex), comma-separated, in slot order. `None`
    /// past [`MAP_TEXT_RANGES`] runs.
    pub fn map_text(&self) -> Option<String> {
        let mut out = String::new();
        let mut runs = 0;
        let mut lo = 0;
        for s in 1..=SLOTS {
            if s == SLOTS || self.owner[s] != self.owner[lo] {
                runs += 1;
                if runs > MAP_TEXT_RANGES {
                    return None;
                }
                let id = self.ids.get(self.owner[lo] as usize).copied().unwrap_or(0);
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(&format!("{lo}-{}:{id:x}", s - 1));
                lo = s;
            }
        }
        Some(out)
    }

    /// From a `CLUSTER SLOTS` reply; `seed` replaces an empty host (a node that does not know
    /// its own address).
    pub fn from_cluster_slots(r: &Reply<'_>, seed: SocketAddr) -> Result<Topology, String> {
        let bad = || "a CLUSTER SLOTS reply of an unexpected shape".to_string();
        let mut t = Topology {
            nodes: Vec::new(),
            owner: vec![u16::MAX; SLOTS],
            cluster: true,
            map_id: 0,
            ids: Vec::new(),
        };
        // FNV-1a over (first slot, last slot, master ID) of every range, in slot order
        let mut ranges: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        for range in r.items().ok_or_else(bad)? {
            let it = range.items().ok_or_else(bad)?;
            let (Some(Reply::Int(lo)), Some(Reply::Int(hi)), Some(master)) =
                (it.first(), it.get(1), it.get(2))
            else {
                return Err(bad());
            };
            let m = master.items().ok_or_else(bad)?;
            let (Some(host), Some(Reply::Int(port))) = (m.first().and_then(Reply::bytes), m.get(1))
            else {
                return Err(bad());
            };
            let host = std::str::from_utf8(host).map_err(|_| bad())?;
            let ip = if host.is_empty() || host == "?" {
                seed.ip()
            } else {
                host.parse()
                    .map_err(|_| format!("node host {host:?} is not an IP address"))?
            };
            let port = u16::try_from(*port).map_err(|_| bad())?;
            // the node ID (Redis 4 and later); the address when a server does not say it
            let id = m
                .get(2)
                .and_then(Reply::bytes)
                .map_or_else(|| format!("{host}:{port}").into_bytes(), <[u8]>::to_vec);
            let addr = SocketAddr::new(ip, port);
            let k = match t.index_of(addr) {
                Some(k) => k,
                None => {
                    t.nodes.push(addr);
                    t.ids.push(fnv(id.iter().copied(), FNV_START));
                    t.nodes.len() - 1
                }
            };
            if !(0..SLOTS as i64).contains(lo) || !(0..SLOTS as i64).contains(hi) || lo > hi {
                return Err(bad());
            }
            for s in *lo as usize..=*hi as usize {
                t.owner[s] = k as u16;
            }
            ranges.push((*lo, *hi, id));
        }
        if t.nodes.is_empty() {
            return Err("the cluster has no slots assigned yet".into());
        }
        if let Some(s) = t.owner.iter().position(|&o| o == u16::MAX) {
            return Err(format!(
                "slot {s} has no node (the cluster is not fully covered)"
            ));
        }
        ranges.sort();
        let mut h = FNV_START;
        for (lo, hi, id) in &ranges {
            h = fnv(lo.to_le_bytes().into_iter().chain(hi.to_le_bytes()), h);
            h = fnv(id.iter().copied(), h);
        }
        t.map_id = h | 1;
        Ok(t)
    }

    /// The index of the node at `addr`, if it is one of the map's.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|&a| a == addr)
    }

    /// The node serving `slot`.
    pub fn node_of_slot(&self, slot: u16) -> usize {
        self.owner[slot as usize] as usize
    }

    /// The node serving `key`.
    pub fn node_of(&self, key: &[u8]) -> usize {
        self.node_of_slot(key_slot(key))
    }
}

/// A `MOVED SLOT HOST:PORT` or `ASK SLOT HOST:PORT` error reply: whether it is an ASK, the
/// slot, and the node it names (when it names one).
pub fn redirect(e: &str) -> Option<(bool, u16, Option<&str>)> {
    let mut w = e.split(' ');
    let ask = match w.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    Some((ask, w.next()?.parse().ok()?, w.next()))
}

/// The redirect in an error reply (anywhere in `e`, which may carry a prefix), if it is one:
/// whether it is an ASK, and the node it names.
fn redirect_in(e: &str) -> Option<(bool, SocketAddr)> {
    let at = e.split(' ').position(|t| t == "ASK" || t == "MOVED")?;
    let reply = e.splitn(at + 1, ' ').last()?;
    match redirect(reply)? {
        (ask, _, Some(to)) => Some((ask, to.parse().ok()?)),
        _ => None,
    }
}

/// The node an ASK error reply names: the slot is being moved there and the key already has
/// been.
pub fn ask_target(e: &str) -> Option<SocketAddr> {
    redirect_in(e).filter(|r| r.0).map(|r| r.1)
}

/// The node a MOVED error reply names: the slot is served there now.
pub fn moved_target(e: &str) -> Option<SocketAddr> {
    redirect_in(e).filter(|r| !r.0).map(|r| r.1)
}

/// Which node (hashed ID) serves each slot, from [`Topology::map_text`]'s text; `None` when
/// the text is not a full map.
pub fn parse_map_text(text: &str) -> Option<Vec<u64>> {
    let mut owner = vec![0u64; SLOTS];
    let mut next = 0usize;
    for run in text.split(',') {
        let (range, id) = run.split_once(':')?;
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
        if lo != next || hi < lo || hi >= SLOTS {
            return None;
        }
        owner[lo..=hi].fill(u64::from_str_radix(id, 16).ok()?);
        next = hi + 1;
    }
    (next == SLOTS).then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_redis_cluster_specification() {
        // the specification's check value for CRC16/XMODEM, and slots redis-cli reports
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn urls_and_seed_lists() {
        assert_eq!(
            parse_url("redis://127.0.0.1:7000,127.0.0.1:7001").unwrap(),
            vec![
                "127.0.0.1:7000".parse().unwrap(),
                "127.0.0.1:7001".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_url("127.0.0.1").unwrap(),
            vec!["127.0.0.1:6379".parse().unwrap()]
        );
        assert!(parse_url("redis://u:p@h:1/0").is_err());
        assert_eq!(
            parse_url("rediss://127.0.0.1:7000").unwrap(),
            parse_url("redis://127.0.0.1:7000").unwrap()
        );
        assert_eq!(
            url_host("rediss://cache.example:6380,b:1"),
            Some("cache.example")
        );
        assert_eq!(url_host("rediss://127.0.0.1:6380"), None);
        assert_eq!(url_host("redis://[::1]:6380"), None);
        assert!(parse_url("redis://").is_err());
    }

    #[test]
    fn a_cluster_slots_reply_maps_every_slot() {
        let wire = b"*2\r\n*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n\
                     *4\r\n:8192\r\n:16383\r\n*2\r\n$0\r\n\r\n:7001\r\n*2\r\n$9\r\n127.0.0.1\r\n:7101\r\n";
        let (r, _) = super::super::resp::parse(wire).unwrap().unwrap();
        let t = Topology::from_cluster_slots(&r, "10.0.0.1:7000".parse().unwrap()).unwrap();
        assert_eq!(
            t.nodes,
            vec![
                "127.0.0.1:7000".parse().unwrap(),
                "10.0.0.1:7001".parse().unwrap()
            ]
        );
        assert_eq!(t.owner[8191], 0);
        assert_eq!(t.owner[8192], 1);
        // the map as the heartbeat carries it, and back
        let text = t.map_text().unwrap();
        let ids = &t.ids;
        assert_eq!(text, format!("0-8191:{:x},8192-16383:{:x}", ids[0], ids[1]));
        let owner = parse_map_text(&text).unwrap();
        assert_eq!(
            (owner[0], owner[8191], owner[8192]),
            (ids[0], ids[0], ids[1])
        );
        assert_eq!(owner[16383], ids[1]);
        for bad in [
            "",
            "0-8191:1",
            "0-8191:1,8193-16383:2",
            "0-16384:1",
            "0-16383:xyz",
            "x",
        ] {
            assert_eq!(parse_map_text(bad), None, "{bad:?}");
        }
        assert_eq!(
            ask_target("redis 127.0.0.1:7000: ASK 3999 127.0.0.1:7001"),
            Some("127.0.0.1:7001".parse().unwrap())
        );
        assert_eq!(
            ask_target("ASK 3999 127.0.0.1:7001"),
            ask_target("x: ASK 3999 127.0.0.1:7001")
        );
        assert_eq!(
            moved_target("redis 127.0.0.1:7000: MOVED 3999 127.0.0.1:7001"),
            Some("127.0.0.1:7001".parse().unwrap())
        );
        assert_eq!(moved_target("ASK 3999 127.0.0.1:7001"), None);
        assert_eq!(redirect("MOVED 12 h:1"), Some((false, 12, Some("h:1"))));
        assert_eq!(redirect("ASK 12"), Some((true, 12, None)));
        assert_eq!(redirect("ERR x"), None);
        for no in [
            "MOVED 3999 127.0.0.1:7001",
            "ASK x 127.0.0.1:7001",
            "ASK 3999",
            "ASK 1 host:1",
        ] {
            assert_eq!(ask_target(no), None, "{no}");
        }
        let mut scattered = t.clone();
        for s in (0..SLOTS).step_by(2) {
            scattered.owner[s] = 0;
        }
        for s in (1..SLOTS).step_by(2) {
            scattered.owner[s] = 1;
        }
        assert_eq!(scattered.map_text(), None, "too many runs");
        let ids = b"*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nn1\r\n";
        let ids_nat = b"*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$8\r\n10.9.9.9\r\n:7777\r\n$2\r\nn1\r\n";
        let ids_new = b"*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nn2\r\n";
        let seed: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let map = |w: &[u8]| {
            let (r, _) = super::super::resp::parse(w).unwrap().unwrap();
            Topology::from_cluster_slots(&r, seed).unwrap().map_id
        };
        assert_eq!(map(ids), map(ids_nat), "node IDs, not addresses");
        assert_ne!(map(ids), map(ids_new), "another node serves the slots");
        let half = b"*1\r\n*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n";
        let (r, _) = super::super::resp::parse(half).unwrap().unwrap();
        let e = Topology::from_cluster_slots(&r, "10.0.0.1:7000".parse().unwrap()).unwrap_err();
        assert!(e.contains("slot 8192"), "{e}");
    }
}
