//! Sleeping until a shared-memory writer publishes: a futex on a `wake` word in the file's
//! header, shared by every process that maps it (the ring's words are in [`super::layout`]; the
//! book's quote table has the same three). A reader that found nothing new calls
//! [`Doorbell::wait`] instead of sleeping a fixed time: it wakes as soon as the writer rings
//! ([`ring`], e.g. through [`super::RingWriter::wake_readers`]) or when its timeout passes. The
//! writer pays a fence and an atomic load a batch while no reader sleeps, one `futex` wake
//! call when some do.
//!
//! The rule: a reader reads `wake`, adds 1 to `sleepers`, looks at `head` again and only then
//! waits on `wake` while it is unchanged; it takes 1 off `sleepers` afterwards. The writer, after
//! storing `head`, issues a full fence and reads `sleepers`; only when it is not 0 does it bump
//! `wake` and wake the waiters. A reader that dies asleep leaves `sleepers` above 0: the writer
//! then makes one needless wake call a batch, and still never waits.

use core::sync::atomic::{AtomicU64, Ordering, fence};
use memmap2::MmapMut;
use std::path::Path;

#[cfg(not(target_endian = "little"))]
compile_error!("the layouts are little-endian: the futex word is the low half of `wake`");

/// Where a file's header keeps the doorbell's words: byte offsets, multiples of 8, each word
/// inside the first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bell {
    /// Bytes of header to map.
    pub len: usize,
    /// The writer's head: the next position it will publish (u64).
    pub head: usize,
    /// Bumped by the writer before each wake-up; the futex is its low 32 bits.
    pub wake: usize,
    /// Readers inside a wait.
    pub sleepers: usize,
}

impl Bell {
    fn valid(&self) -> bool {
        [self.head, self.wake, self.sleepers]
            .iter()
            .all(|&o| o % 8 == 0 && o + 8 <= self.len)
    }
}

/// A reader's writable mapping of a header, to sleep until the writer publishes.
#[derive(Debug)]
pub struct Doorbell {
    map: MmapMut,
    bell: Bell,
}

impl Doorbell {
    /// Maps the header of `file` (opened read-only by the reader; the same file is reopened
    /// read-write through `/proc/self/fd`, so a file replaced at `path` since the reader
    /// opened it cannot be mixed up with it). The caller has checked that the file has a
    /// layout with these words and is at least `bell.len` bytes long.
    pub fn open(file: &std::fs::File, path: &Path, bell: Bell) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        if !bell.valid() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: doorbell words outside the header", path.display()),
            ));
        }
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        // SAFETY: a shared mapping of the header only; this process changes nothing in it but
        // `sleepers`, through atomics, and every other process accesses the words it shares
        // only atomically.
        let map = unsafe { memmap2::MmapOptions::new().len(bell.len).map_mut(&rw) }?;
        Ok(Doorbell { map, bell })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `map` is the header (`bell.len` bytes, page aligned), owned by `self`; the
        // offsets are the bell's, checked in `open` to be multiples of 8 inside it.
        unsafe { super::word(self, self.map.as_ptr(), offset) }
    }

    /// Sleeps until the writer's head passes `pos` (the reader's position), `timeout_ns`
    /// passes, or a signal comes; returns at once, with `false`, when the head already has.
    /// Returns `true` when it went to sleep (however it woke).
    pub fn wait(&self, pos: u64, timeout_ns: u64) -> bool {
        let wake = self.word(self.bell.wake);
        let sleepers = self.word(self.bell.sleepers);
        let seen = wake.load(Ordering::Acquire);
        sleepers.fetch_add(1, Ordering::SeqCst);
        // A publish the writer made before it read `sleepers` is visible here; one it makes
        // after sees this sleeper and bumps `wake`, which makes the wait below return at once.
        let slept = self.word(self.bell.head).load(Ordering::SeqCst) <= pos;
        if slept {
            futex_wait(wake, seen as u32, timeout_ns);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
        slept
    }

    /// Readers inside [`Doorbell::wait`] now (any process).
    pub fn sleepers(&self) -> u64 {
        self.word(self.bell.sleepers).load(Ordering::Relaxed)
    }
}

// SAFETY: the mapping moves with the struct and is only accessed through atomics.
unsafe impl Send for Doorbell {}

/// The writer's side, after a batch of publishes (each `head` store done, with release): if
/// `head` moved since `rung` (the head when it last rang, updated here), wakes the readers
/// asleep on `wake`, when `sleepers` says there are any. Never waits.
#[inline]
pub fn ring(head: u64, rung: &mut u64, wake: &AtomicU64, sleepers: &AtomicU64) {
    if head == *rung {
        return;
    }
    *rung = head;
    // pairs with the sleeper's increment before it looks at the head
    fence(Ordering::SeqCst);
    if sleepers.load(Ordering::Relaxed) != 0 {
        wake.fetch_add(1, Ordering::Release);
        futex_wake(wake);
    }
}

/// Waits while the low 32 bits of `word` equal `expected`, at most `timeout_ns`.
fn futex_wait(word: &AtomicU64, expected: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: the address is a live, 8-aligned word of a shared mapping (its low half on a
    // little-endian machine); the kernel only reads it and `ts` during the call. Not
    // FUTEX_PRIVATE: the waker is another process. EAGAIN, ETIMEDOUT and EINTR all mean "look
    // again", which is what every caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr() as *const u32,
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            core::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every waiter on `word`.
fn futex_wake(word: &AtomicU64) {
    // SAFETY: the address is a live, 8-aligned word of a shared mapping; FUTEX_WAKE reads
    // nothing but the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr() as *const u32,
            libc::FUTEX_WAKE,
            i32::MAX,
            core::ptr::null::<libc::timespec>(),
            core::ptr::null::<u32>(),
            0u32,
        );
    }
}
