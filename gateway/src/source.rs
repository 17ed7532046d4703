//! Where quotes come from: one narrow interface, [`QuoteSource`], so the rest of the gateway
//! does not know whether quotes come from the local shared-memory quote table (written by
//! `book run` or by `gateway synth`) or from elsewhere. A source owns the trust question: when
//! it loses its input it re-emits every quote it knows with `stale` set, and when it gets the
//! input back it emits fresh values.

use book::quotes::{Change, Quote, QuoteReader};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Is the source's input live?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Quotes are flowing from a live writer.
    Live,
    /// Not live, and why.
    Down(String),
}

/// A source of quote changes.
pub trait QuoteSource: Send {
    /// Calls `f` with each quote that changed since the last call (at most `max` of them; the
    /// rest wait for the next call) and returns how many.
    fn poll(&mut self, now_ns: u64, max: usize, f: &mut dyn FnMut(&Quote)) -> usize;
    /// Whether the input is live.
    fn health(&self) -> Health;
    /// Whether every quote the input held when it was first reached has been given to `poll`
    /// (or will be by the next calls, until one returns fewer than `max`): until then a symbol
    /// not seen may only be not loaded yet, and the gateway holds the requests that would call
    /// it unknown. Once true, it stays true: later outages are told as `stale`.
    fn ready(&self) -> bool;
    /// The source's own counters and gauges in Prometheus text, appended to `/metrics`.
    fn prometheus(&self, _out: &mut String) {}
}

/// The shared-memory quote table, followed through its change feed. Checks once a second that
/// the table's writer is alive and that the file is still the one attached; when either fails
/// every quote goes stale, and a new table at the same path is attached and read whole.
pub struct ShmSource {
    path: PathBuf,
    /// The attached table, its inode, and its doorbell (with [`ShmSource::with_doorbell`],
    /// when this process may write the file).
    reader: Option<(QuoteReader, u64, Option<feed_handler::ring::Doorbell>)>,
    use_bell: bool,
    scan: Option<usize>,
    known: Vec<Quote>,
    next_check_ns: u64,
    health: Health,
    stale_sent: bool,
}

impl std::fmt::Debug for ShmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShmSource({})", self.path.display())
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid != 0
        && (unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

impl ShmSource {
    /// A source reading the table at `path` (attached now if it exists, later otherwise).
    pub fn new(path: PathBuf) -> Self {
        let mut s = ShmSource {
            path,
            reader: None,
            use_bell: false,
            scan: None,
            known: Vec::new(),
            next_check_ns: 0,
            health: Health::Down("not attached yet".into()),
            stale_sent: false,
        };
        s.try_attach();
        s
    }

    fn try_attach(&mut self) {
        let ino = match std::fs::metadata(&self.path) {
            Ok(m) => m.ino(),
            Err(_) => {
                self.health = Health::Down(format!(
                    "no quote table at {} (start `book run`, or `gateway synth` for a synthetic market)",
                    self.path.display()
                ));
                return;
            }
        };
        match QuoteReader::attach(&self.path) {
            Ok(r) => {
                if pid_alive(r.writer_pid()) {
                    self.health = Health::Live;
                } else {
                    self.health = Health::Down(format!(
                        "the writer of {} (pid {}) is gone",
                        self.path.display(),
                        r.writer_pid()
                    ));
                }
                let bell = if self.use_bell {
                    r.doorbell().ok()
                } else {
                    None
                };
                self.reader = Some((r, ino, bell));
                self.scan = Some(0);
                self.stale_sent = false;
            }
            Err(e) => self.health = Health::Down(e),
        }
    }

    fn check(&mut self) {
        let current = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        match &self.reader {
            Some((r, ino, _)) if current == Some(*ino) => {
                self.health = if pid_alive(r.writer_pid()) {
                    Health::Live
                } else {
                    Health::Down(format!(
                        "the writer of {} (pid {}) is gone",
                        self.path.display(),
                        r.writer_pid()
                    ))
                };
            }
            _ => {
                self.reader = None;
                self.try_attach();
            }
        }
    }

    /// The same, able to [`ShmSource::wait`] on the table's doorbell (a writable mapping of
    /// the table's header, opened at each attach).
    pub fn with_doorbell(mut self) -> Self {
        self.use_bell = true;
        if let Some((r, _, bell)) = &mut self.reader {
            *bell = r.doorbell().ok();
        }
        self
    }

    /// After a [`QuoteSource::poll`] that found nothing: sleeps on the table's doorbell until
    /// its writer publishes more, at most `timeout_ns`, and returns `true`; returns `false` at
    /// once when there is no doorbell to sleep on (not asked for, no table attached, or no
    /// write access to it), for the caller to sleep its own way.
    pub fn wait(&self, timeout_ns: u64) -> bool {
        match &self.reader {
            Some((r, _, Some(bell))) => {
                if self.scan.is_none() {
                    bell.wait(r.position(), timeout_ns);
                }
                true
            }
            _ => false,
        }
    }
}

impl QuoteSource for ShmSource {
    fn poll(&mut self, now_ns: u64, max: usize, f: &mut dyn FnMut(&Quote)) -> usize {
        if now_ns >= self.next_check_ns {
            self.next_check_ns = now_ns + 1_000_000_000;
            self.check();
        }
        let mut n = 0;
        if self.health != Health::Live {
            if !self.stale_sent {
                self.stale_sent = true;
                for q in self
                    .known
                    .iter_mut()
                    .filter(|q| !q.stale && q.symbol != [0; 8])
                {
                    q.stale = true;
                    f(q);
                    n += 1;
                }
            }
            if self.reader.is_none() {
                return n;
            }
        }
        let stale_all = self.health != Health::Live;
        let Some((r, _, _)) = self.reader.as_mut() else {
            return n;
        };
        fn emit(
            r: &QuoteReader,
            i: usize,
            stale_all: bool,
            known: &mut Vec<Quote>,
            f: &mut dyn FnMut(&Quote),
        ) {
            if let Some(mut q) = r.read(i) {
                q.stale |= stale_all;
                if known.len() <= i {
                    known.resize(i + 1, Quote::default());
                }
                known[i] = q;
                f(&q);
            }
        }
        if let Some(from) = self.scan {
            let to = (from + max).min(r.slots());
            for i in from..to {
                emit(r, i, stale_all, &mut self.known, f);
            }
            n += to - from;
            self.scan = (to < r.slots()).then_some(to);
            return n;
        }
        while n < max {
            match r.next_change() {
                Change::Empty => break,
                Change::Rescan => {
                    self.scan = Some(0);
                    break;
                }
                Change::Slot(i) => {
                    emit(r, i, stale_all, &mut self.known, f);
                    n += 1;
                }
            }
        }
        n
    }

    fn health(&self) -> Health {
        self.health.clone()
    }

    /// A table is attached (its first poll reads it whole).
    fn ready(&self) -> bool {
        self.reader.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use book::quotes::QuoteWriter;
    use std::os::unix::fs::FileExt;

    fn q(sym: &[u8; 8], bid: u32) -> Quote {
        Quote {
            symbol: *sym,
            bid: Some((bid, 100)),
            ..Quote::default()
        }
    }

    fn poll(s: &mut ShmSource, now: u64) -> Vec<Quote> {
        let mut v = Vec::new();
        s.poll(now, 1000, &mut |q| v.push(*q));
        v
    }

    #[test]
    fn a_dead_writer_or_a_replaced_table_makes_everything_stale_until_fresh_values_come() {
        let p = std::env::temp_dir().join(format!("src-{}.quotes", std::process::id()));
        let mut w = QuoteWriter::create(&p, 4, 16).unwrap();
        w.publish(0, &q(b"AAAA    ", 1));
        w.publish(1, &q(b"BBBB    ", 2));
        let mut s = ShmSource::new(p.clone());
        assert_eq!(s.health(), Health::Live);
        let first = poll(&mut s, 1);
        assert_eq!(first.len(), 2, "a whole scan on attach");
        assert!(first.iter().all(|q| !q.stale));
        w.publish(1, &q(b"BBBB    ", 3));
        assert_eq!(
            poll(&mut s, 2),
            vec![q(b"BBBB    ", 3)],
            "then the change feed"
        );

        // the writer dies (its pid now names no process): every quote goes stale, once
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&dead.to_le_bytes(), 32)
            .unwrap();
        let stale = poll(&mut s, 2_000_000_000);
        assert!(matches!(s.health(), Health::Down(_)));
        assert_eq!(stale.len(), 2);
        assert!(stale.iter().all(|q| q.stale));
        assert!(poll(&mut s, 2_000_000_001).is_empty(), "said once");

        // a new writer replaces the table: attached and read whole, fresh
        drop(w);
        let mut w2 = QuoteWriter::create(&p, 4, 16).unwrap();
        w2.publish(0, &q(b"AAAA    ", 7));
        let fresh = poll(&mut s, 4_000_000_000);
        assert_eq!(s.health(), Health::Live);
        assert_eq!(fresh, vec![q(b"AAAA    ", 7)]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_source_with_a_doorbell_sleeps_until_the_table_changes() {
        let p = std::env::temp_dir().join(format!("src-bell-{}.quotes", std::process::id()));
        let mut w = QuoteWriter::create(&p, 4, 16).unwrap();
        w.publish(0, &q(b"AAAA    ", 1));
        assert!(
            !ShmSource::new(p.clone()).wait(600_000_000_000),
            "no doorbell unless asked for: the caller sleeps its own way"
        );
        let mut s = ShmSource::new(p.clone()).with_doorbell();
        assert_eq!(poll(&mut s, 1).len(), 1);
        assert!(poll(&mut s, 2).is_empty());
        let watch = QuoteReader::attach(&p).unwrap().doorbell().unwrap();
        let sleeper = std::thread::spawn(move || {
            let used = s.wait(600_000_000_000);
            (used, s)
        });
        while watch.sleepers() == 0 {
            std::hint::spin_loop();
        }
        w.publish(1, &q(b"BBBB    ", 2));
        w.wake_readers();
        let (used, mut s) = sleeper.join().unwrap();
        assert!(used);
        assert_eq!(poll(&mut s, 3), vec![q(b"BBBB    ", 2)]);
        std::fs::remove_file(&p).unwrap();
    }
}
