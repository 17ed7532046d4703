//! The journal: every record the ring ever held, appended to a file, so a reader that was
//! overrun, or that starts after the writer, reads what it missed from disk and then joins the
//! ring without a hole ([`Subscriber`]).
//!
//! ```text
//!  file <ring>.journal
//!  offset 0    128-byte header: magic "ITCHJRN1" | version u32 (2) | record size u32 (128) |
//!              ring generation u64 | zero padding
//!  offset 128  record at position p (at 128 + 128 p): the ring slot's 16 words, little-endian,
//!              word 0 = p (instead of the stamp)
//! ```
//! The writer copies each record into a shared mapping of the file and publishes in the ring
//! header how many records the file holds (`journal_end`); readers never read past it, so they
//! never see a half-written record. The file grows 64 MiB at a time (its size is a whole number
//! of chunks; only `journal_end` says how much is records). A session's journal grows with the
//! session (128 bytes a message); it is replaced when the ring is created again.
//!
//! Its growth is bounded ([`JournalLimits`]): a cap on the file, and space it leaves free on
//! its filesystem, checked before each chunk (a mapping of a file on a full filesystem would
//! kill the writer with SIGBUS at the first write to it). When the journal cannot grow it
//! stops: the feed handler says so in the ring header ([`JournalState::Stopped`]) and goes on
//! without it, and a reader that the ring then laps gets [`RingError::Lost`] naming the records
//! it lost instead of waiting for them for ever (the same with no journal at all).

use crate::ring::layout::{Record, SLOT_SIZE, SLOT_WORDS};
use crate::ring::{JournalState, Read, RingError, RingReader};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// "ITCHJRN1".
pub const MAGIC: [u8; 8] = *b"ITCHJRN1";
/// Journal format version.
pub const VERSION: u32 = 2;
/// Bytes before the first record (one slot, so records never straddle a mapped chunk).
pub const HEADER: u64 = 128;

/// The journal file of a ring file.
pub fn journal_path(ring: &Path) -> PathBuf {
    let mut s = ring.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// Bytes the file grows by, and is mapped in, at a time.
pub const CHUNK: u64 = 64 << 20;

/// How far a journal may grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalLimits {
    /// Bytes mapped and faulted in at start.
    pub preallocate_bytes: u64,
    /// Largest file, bytes (0: no cap but the filesystem's).
    pub max_bytes: u64,
    /// Space the journal leaves free on its filesystem, bytes: it stops rather than take it
    /// (`None`: 1 GiB, or a tenth of the filesystem if that is less).
    pub min_free_bytes: Option<u64>,
}

/// Appends records by copying them into a shared mapping of the file (no system call per
/// record or per batch): the records are in the page cache, visible to readers in other
/// processes, as soon as the copy is done. The file grows and is mapped a chunk (64 MiB) at a
/// time, within its [`JournalLimits`]; chunks up to `preallocate_bytes` are mapped and faulted
/// in at start, so appends there never stall on page allocation (on a virtual machine, memory
/// touched for the first time is slow).
#[derive(Debug)]
pub struct JournalWriter {
    file: File,
    chunks: Vec<memmap2::MmapMut>,
    written: u64,
    limits: JournalLimits,
    /// Records the cap leaves room for.
    max_records: u64,
}

impl JournalWriter {
    /// Creates (replaces) the journal for a ring of `generation`: no cap, the default
    /// free-space reserve, nothing preallocated.
    pub fn create(path: &Path, generation: u64) -> std::io::Result<Self> {
        Self::create_with(path, generation, JournalLimits::default())
    }

    /// Like [`JournalWriter::create`], within `limits` (and with their preallocation done).
    pub fn create_with(
        path: &Path,
        generation: u64,
        limits: JournalLimits,
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut h = [0u8; HEADER as usize];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
        h[16..24].copy_from_slice(&generation.to_le_bytes());
        file.write_all_at(&h, 0)?;
        let mut w = JournalWriter {
            file,
            chunks: Vec::new(),
            written: 0,
            limits,
            max_records: match limits.max_bytes {
                0 => u64::MAX,
                b => b.saturating_sub(HEADER) / SLOT_SIZE as u64,
            },
        };
        let bytes = limits.preallocate_bytes;
        let want = (HEADER + bytes).div_ceil(CHUNK).max(1);
        for _ in 0..want {
            w.grow(bytes > 0)?;
        }
        Ok(w)
    }

    /// Maps one more chunk (the file is extended to hold it), unless that would leave less
    /// than the minimum free on the filesystem.
    fn grow(&mut self, populate: bool) -> std::io::Result<()> {
        let start = self.chunks.len() as u64 * CHUNK;
        let (free, size) = space(&self.file)?;
        let reserve = self
            .limits
            .min_free_bytes
            .unwrap_or((1 << 30).min(size / 10));
        if free < CHUNK + reserve {
            return Err(full(format!(
                "full: its filesystem has {} MiB free, and the journal leaves {} MiB \
                 (journal_min_free_mb)",
                free >> 20,
                reserve >> 20
            )));
        }
        self.file.set_len(start + CHUNK)?;
        let mut o = memmap2::MmapOptions::new();
        o.offset(start).len(CHUNK as usize);
        if populate {
            o.populate();
        }
        // SAFETY: a shared mapping of a file this writer created and alone writes; readers in
        // other processes read it with pread, only below the journal end the ring publishes
        // after these copies.
        let m = unsafe { o.map_mut(&self.file) }?;
        self.chunks.push(m);
        Ok(())
    }

    /// Appends the record at `position` (positions must come in order, from 0).
    pub fn append(&mut self, position: u64, rec: &Record) -> std::io::Result<()> {
        self.append_words(position, &rec.to_words())
    }

    /// Appends a record given as its slot words (word 0 is replaced by the position).
    #[inline]
    pub fn append_words(
        &mut self,
        position: u64,
        words: &[u64; SLOT_WORDS],
    ) -> std::io::Result<()> {
        debug_assert_eq!(position, self.written);
        if position >= self.max_records {
            return Err(full(format!(
                "full: its cap (journal_max_mb = {}) is reached",
                self.limits.max_bytes >> 20
            )));
        }
        // HEADER is a whole slot, so a record never straddles two chunks.
        let off = HEADER + position * SLOT_SIZE as u64;
        let chunk = (off / CHUNK) as usize;
        while chunk >= self.chunks.len() {
            self.grow(false)?;
        }
        let at = (off % CHUNK) as usize;
        let dst = &mut self.chunks[chunk][at..at + SLOT_SIZE];
        dst[..8].copy_from_slice(&position.to_le_bytes());
        for (i, x) in words.iter().enumerate().skip(1) {
            dst[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
        self.written += 1;
        Ok(())
    }

    /// Records the file holds (every append is in the page cache at once; readers may read up
    /// to here once the ring publishes it as `journal_end`).
    pub fn flush(&mut self) -> std::io::Result<u64> {
        Ok(self.written)
    }

    /// Records appended.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// The error of a journal that cannot take more.
fn full(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::StorageFull, why)
}

/// Bytes an unprivileged writer may still take on the file's filesystem, and its size.
fn space(file: &File) -> std::io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    // SAFETY: statvfs is plain old data; zeroes are a valid value of it.
    let mut st: libc::statvfs = unsafe { core::mem::zeroed() };
    // SAFETY: the descriptor is open for as long as `file` lives, and `st` is a valid place
    // for the kernel to write the result.
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bytes = |blocks: libc::fsblkcnt_t| blocks.saturating_mul(st.f_frsize);
    Ok((bytes(st.f_bavail), bytes(st.f_blocks)))
}

/// Reads records back by position.
#[derive(Debug)]
pub struct JournalReader {
    file: File,
    path: PathBuf,
    generation: u64,
}

impl JournalReader {
    /// Opens a journal and checks its header.
    pub fn open(path: &Path) -> Result<Self, RingError> {
        let io = |e| RingError::Io(path.to_path_buf(), e);
        let file = File::open(path).map_err(io)?;
        let mut h = [0u8; HEADER as usize];
        file.read_exact_at(&mut h, 0).map_err(io)?;
        if h[..8] != MAGIC || u32::from_le_bytes(h[8..12].try_into().expect("4")) != VERSION {
            return Err(RingError::Layout(
                path.to_path_buf(),
                "not a journal of this version".into(),
            ));
        }
        if u32::from_le_bytes(h[12..16].try_into().expect("4")) as usize != SLOT_SIZE {
            return Err(RingError::Layout(
                path.to_path_buf(),
                "journal record size differs".into(),
            ));
        }
        Ok(JournalReader {
            file,
            path: path.to_path_buf(),
            generation: u64::from_le_bytes(h[16..24].try_into().expect("8")),
        })
    }

    /// The ring generation the journal belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The record at `position` (the caller keeps below the ring's `journal_end`).
    pub fn read(&self, position: u64) -> Result<Record, RingError> {
        let mut b = [0u8; SLOT_SIZE];
        self.file
            .read_exact_at(&mut b, HEADER + position * SLOT_SIZE as u64)
            .map_err(|e| RingError::Io(self.path.clone(), e))?;
        let mut w = [0u64; SLOT_WORDS];
        for (i, x) in w.iter_mut().enumerate() {
            *x = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        if w[0] != position {
            return Err(RingError::Layout(
                self.path.clone(),
                format!("journal record {position} says it is {}", w[0]),
            ));
        }
        Record::from_words(position, &w).ok_or_else(|| {
            RingError::Layout(
                self.path.clone(),
                format!("journal record {position} is corrupt"),
            )
        })
    }
}

/// Where a [`Subscriber`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The next record written.
    Live,
    /// The first record of the session (from the journal).
    Beginning,
    /// A given position.
    At(u64),
}

/// A reader that never misses a record: it reads the ring, and when it is overrun (or starts
/// before what the ring still holds) it reads the journal until it can join the ring again.
#[derive(Debug)]
pub struct Subscriber {
    ring: RingReader,
    journal: Option<JournalReader>,
    journal_file: PathBuf,
    pos: u64,
    /// Times the ring lapped this reader (it was reading the ring and had to go back to the
    /// journal; catching up from the journal after attaching is not counted).
    pub overruns: u64,
    on_ring: bool,
    /// Records read from the journal.
    pub from_journal: u64,
    /// Records lost: dropped by the ring and not in the journal ([`RingError::Lost`]).
    pub lost: u64,
}

impl Subscriber {
    /// Attaches to the ring at `ring_path`.
    pub fn attach(ring_path: &Path, start: Start) -> Result<Self, RingError> {
        let ring = RingReader::attach(ring_path)?;
        let pos = match start {
            Start::Live => ring.head(),
            Start::Beginning => 0,
            Start::At(p) => p,
        };
        Ok(Subscriber {
            ring,
            journal: None,
            journal_file: journal_path(ring_path),
            pos,
            overruns: 0,
            on_ring: false,
            from_journal: 0,
            lost: 0,
        })
    }

    /// The next position to read.
    pub fn position(&self) -> u64 {
        self.pos
    }
    /// The ring reader (for its header, head and journal end).
    pub fn ring(&self) -> &RingReader {
        &self.ring
    }

    /// The next record, `Ok(None)` when there is nothing new yet. [`RingError::Lost`] when
    /// records were dropped by the ring and the journal does not hold them: the reader has then
    /// moved past them, and the next call goes on.
    pub fn next_record(&mut self) -> Result<Option<Record>, RingError> {
        // Keep a margin so a record read from the ring is not about to be overwritten.
        let margin = self.ring.info().capacity / 8;
        if self.pos + self.ring.info().capacity.saturating_sub(margin) < self.ring.head()
            || self.pos < self.ring.oldest()
        {
            self.left_ring();
            return self.read_journal();
        }
        self.ring.seek(self.pos);
        match self.ring.read() {
            Read::Record(r) => {
                self.pos += 1;
                self.on_ring = true;
                Ok(Some(r))
            }
            Read::Empty => Ok(None),
            Read::Overrun { .. } => {
                self.left_ring();
                self.read_journal()
            }
        }
    }

    /// Records the ring dropped that no journal holds: the reader moves on to half a ring
    /// behind the writer (room to catch up before it is lapped again) and says what it lost.
    fn lose(&mut self, journal: JournalState, journal_end: u64) -> RingError {
        let from = self.pos;
        let to = from.max(
            self.ring
                .head()
                .saturating_sub(self.ring.info().capacity / 2),
        );
        self.pos = to;
        self.lost += to - from;
        RingError::Lost {
            path: self.ring.path().to_path_buf(),
            from,
            to,
            journal,
            journal_end,
        }
    }

    /// A reader that was following the ring and now must read the journal has been lapped.
    fn left_ring(&mut self) {
        if self.on_ring {
            self.on_ring = false;
            self.overruns += 1;
        }
    }

    fn read_journal(&mut self) -> Result<Option<Record>, RingError> {
        if self.pos >= self.ring.journal_end() {
            let journal = self.ring.journal_state();
            // (read after the state: a stopped journal's end is final)
            let journal_end = self.ring.journal_end();
            if journal == JournalState::Writing {
                // Not on disk yet; it will be soon (the writer flushes every batch).
                return Ok(None);
            }
            if self.pos >= journal_end {
                return Err(self.lose(journal, journal_end));
            }
        }
        if self.journal.is_none() {
            let j = JournalReader::open(&self.journal_file)?;
            if j.generation() != self.ring.info().generation {
                return Err(RingError::Layout(
                    self.journal_file.clone(),
                    "journal belongs to another ring generation".into(),
                ));
            }
            self.journal = Some(j);
        }
        let r = self
            .journal
            .as_ref()
            .expect("opened above")
            .read(self.pos)?;
        self.pos += 1;
        self.from_journal += 1;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingWriter;

    #[test]
    fn an_overrun_reader_catches_up_from_the_journal_without_a_hole() {
        let dir = std::env::temp_dir().join(format!("journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ring = dir.join("r");
        let mut w = RingWriter::create(&ring, 16).unwrap();
        let generation = RingReader::attach(&ring).unwrap().info().generation;
        let mut j = JournalWriter::create(&journal_path(&ring), generation).unwrap();
        let mut live = Subscriber::attach(&ring, Start::Live).unwrap();
        let mut got = Vec::new();
        for s in 0..1000u64 {
            let rec = Record::message(3, s + 1, s, s, &s.to_le_bytes()).unwrap();
            let p = w.publish(&rec);
            j.append(p, &rec).unwrap();
            if s % 7 == 0 {
                let n = j.flush().unwrap();
                w.set_journal_end(n);
            }
            // the live reader reads only now and then: it is lapped many times
            if s % 100 == 99 {
                while let Some(r) = live.next_record().unwrap() {
                    got.push(r.seq);
                }
            }
        }
        let n = j.flush().unwrap();
        w.set_journal_end(n);
        while let Some(r) = live.next_record().unwrap() {
            got.push(r.seq);
        }
        assert_eq!(got, (1..=1000).collect::<Vec<_>>());
        assert!(live.overruns > 0 || live.from_journal > 0);
        // a late reader from the beginning gets everything too
        let mut late = Subscriber::attach(&ring, Start::Beginning).unwrap();
        let mut all = Vec::new();
        while let Some(r) = late.next_record().unwrap() {
            assert_eq!(r.data(), &(r.seq - 1).to_le_bytes()[..]);
            all.push(r.seq);
        }
        assert_eq!(all, (1..=1000).collect::<Vec<_>>());
        assert!(late.from_journal >= 1000 - 16);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn temp_ring(name: &str) -> (PathBuf, RingWriter) {
        let dir = std::env::temp_dir().join(format!("journal-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ring = dir.join("r");
        let w = RingWriter::create(&ring, 16).unwrap();
        (ring, w)
    }

    fn seqs_until_lost(s: &mut Subscriber) -> (Vec<u64>, Option<RingError>) {
        let mut got = Vec::new();
        loop {
            match s.next_record() {
                Ok(Some(r)) => got.push(r.seq),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[test]
    fn a_lapped_reader_with_no_journal_is_told_what_it_lost_and_goes_on() {
        let (ring, mut w) = temp_ring("off");
        w.set_journal_state(JournalState::Off);
        for s in 1..=100u64 {
            w.publish(&Record::message(3, s, s, s, &[b'D'; 19]).unwrap());
        }
        let mut late = Subscriber::attach(&ring, Start::Beginning).unwrap();
        // (it waited for ever before: "not in the journal yet")
        let (got, e) = seqs_until_lost(&mut late);
        assert!(got.is_empty());
        match e {
            Some(RingError::Lost {
                from: 0,
                to: 92,
                journal: JournalState::Off,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let said = e.unwrap().to_string();
        assert!(
            said.contains("records 0..92 are lost") && said.contains("keeps no journal"),
            "{said}"
        );
        assert_eq!(late.lost, 92);
        // half a ring behind the writer, it reads on without a hole
        let (got, e) = seqs_until_lost(&mut late);
        assert!(e.is_none());
        assert_eq!(got, (93..=100).collect::<Vec<_>>());
        std::fs::remove_dir_all(ring.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_stopped_journal_serves_what_it_holds_then_the_reader_is_told_the_rest_is_lost() {
        let (ring, mut w) = temp_ring("stopped");
        let mut j = JournalWriter::create(&journal_path(&ring), w.generation()).unwrap();
        for s in 1..=100u64 {
            let rec = Record::message(3, s, s, s, &[b'D'; 19]).unwrap();
            let p = w.publish(&rec);
            // the journal took the first 40
            if s <= 40 {
                j.append(p, &rec).unwrap();
            }
            if s == 30 {
                w.set_journal_end(j.flush().unwrap());
            }
        }
        let mut late = Subscriber::attach(&ring, Start::Beginning).unwrap();
        // while the journal is being written the reader waits for it
        let (got, e) = seqs_until_lost(&mut late);
        assert_eq!((got, e.is_none()), ((1..=30).collect::<Vec<_>>(), true));
        assert_eq!(late.next_record().unwrap(), None);
        w.set_journal_end(j.flush().unwrap());
        w.set_journal_state(JournalState::Stopped);
        let (got, e) = seqs_until_lost(&mut late);
        assert_eq!(got, (31..=40).collect::<Vec<_>>());
        match e {
            Some(RingError::Lost {
                from: 40,
                to: 92,
                journal: JournalState::Stopped,
                journal_end: 40,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let (got, e) = seqs_until_lost(&mut late);
        assert!(e.is_none());
        assert_eq!(got, (93..=100).collect::<Vec<_>>());
        std::fs::remove_dir_all(ring.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_journal_stops_at_its_cap_and_before_its_filesystem_fills() {
        let dir = std::env::temp_dir().join(format!("journal-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j");
        let capped = JournalLimits {
            max_bytes: 1 << 20,
            ..JournalLimits::default()
        };
        let mut j = JournalWriter::create_with(&path, 1, capped).unwrap();
        let words = Record::message(3, 1, 1, 1, &[b'D'; 19]).unwrap().to_words();
        let fits = ((1 << 20) - HEADER) / SLOT_SIZE as u64;
        for p in 0..fits {
            j.append_words(p, &words).unwrap();
        }
        let e = j.append_words(fits, &words).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("journal_max_mb = 1)"), "{e}");
        assert_eq!(j.written(), fits, "nothing half-written");
        // it reads back whole
        let r = JournalReader::open(&path).unwrap();
        assert_eq!(r.read(fits - 1).unwrap().seq, 1);
        // a filesystem without the space it must leave free: refused up front
        let e = JournalWriter::create_with(
            &dir.join("k"),
            1,
            JournalLimits {
                min_free_bytes: Some(1 << 60),
                ..JournalLimits::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("journal_min_free_mb"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 300, ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever the writer and a slow reader do, with a journal, none, or one that stops:
        /// the reader gets each position once and in order, or is told it lost it (and only
        /// when neither the ring nor the journal holds it), and never waits while a record is
        /// there to read.
        #[test]
        fn a_reader_gets_every_record_or_is_told_it_lost_it(
            cap_log2 in 3u32..7,
            journal in 0u8..3,
            stop_at in 0u64..600,
            steps in proptest::collection::vec((0u64..50, 0u64..50), 1..30),
        ) {
            let dir = std::env::temp_dir().join(format!(
                "journal-prop-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let ring = dir.join("r");
            let mut w = RingWriter::create(&ring, 1 << cap_log2).unwrap();
            // 0: no journal; 1: a journal throughout; 2: one that stops at `stop_at`
            let mut j = (journal > 0)
                .then(|| JournalWriter::create(&journal_path(&ring), w.generation()).unwrap());
            if j.is_none() {
                w.set_journal_state(JournalState::Off);
            }
            let mut r = Subscriber::attach(&ring, Start::Beginning).unwrap();
            let (mut head, mut next) = (0u64, 0u64);
            let read = |r: &mut Subscriber, next: &mut u64, head: u64, n: u64| {
                for _ in 0..n {
                    match r.next_record() {
                        Ok(Some(rec)) => {
                            proptest::prop_assert_eq!(rec.position, *next);
                            proptest::prop_assert_eq!(rec.seq, rec.position + 1);
                            *next += 1;
                        }
                        Ok(None) => {
                            proptest::prop_assert_eq!(*next, head, "waited with records to read");
                            break;
                        }
                        Err(RingError::Lost { from, to, journal_end, .. }) => {
                            proptest::prop_assert_eq!(from, *next);
                            proptest::prop_assert!(to > from && to <= head);
                            proptest::prop_assert!(from >= journal_end, "the journal had it");
                            proptest::prop_assert!(
                                from < head.saturating_sub(1 << cap_log2) + (1 << cap_log2) / 8,
                                "the ring still had it"
                            );
                            *next = to;
                        }
                        Err(e) => proptest::prop_assert!(false, "{e}"),
                    }
                }
                Ok(())
            };
            for &(publish, reads) in &steps {
                for _ in 0..publish {
                    let rec = Record::message(1, head + 1, 0, 0, &[b'D'; 19]).unwrap();
                    let p = w.publish(&rec);
                    if let Some(jw) = j.as_mut() {
                        jw.append(p, &rec).unwrap();
                    }
                    head += 1;
                    if journal == 2 && head == stop_at && let Some(jw) = j.take() {
                        w.set_journal_end(jw.written());
                        w.set_journal_state(JournalState::Stopped);
                    }
                }
                if let Some(jw) = j.as_mut() {
                    w.set_journal_end(jw.flush().unwrap());
                }
                read(&mut r, &mut next, head, reads)?;
            }
            read(&mut r, &mut next, head, u64::MAX)?;
            proptest::prop_assert_eq!(next, head);
            if journal == 1 {
                proptest::prop_assert_eq!(r.lost, 0, "a journal throughout: nothing lost");
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
