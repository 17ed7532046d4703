//! Sleeping until the ring's writer publishes: a futex on the header's `wake` word, shared by
//! every process that maps the ring (the rule is in [`super::layout`]). A reader that found
//! nothing new calls [`Doorbell::wait`] instead of sleeping a fixed time: it wakes as soon as
//! the writer rings ([`super::RingWriter::wake_readers`]) or when its timeout passes. The
//! writer pays one atomic load a batch while no reader sleeps, one `futex` wake call when one
//! does.

use super::RingError;
use super::layout::{HEAD_OFFSET, HEADER_SIZE, SLEEPERS_OFFSET, WAKE_OFFSET};
use core::sync::atomic::{AtomicU64, Ordering};
use memmap2::MmapMut;
use std::path::Path;

#[cfg(not(target_endian = "little"))]
compile_error!("the ring layout is little-endian: the futex word is the low half of `wake`");

/// A reader's writable mapping of the ring header, to sleep until the writer publishes.
#[derive(Debug)]
pub struct Doorbell {
    map: MmapMut,
}

impl Doorbell {
    /// Maps the header of the ring whose file is `file` (opened read-only by the reader; the
    /// same file is reopened read-write through `/proc/self/fd`, so a ring replaced since the
    /// reader attached cannot be mixed up with it).
    pub(super) fn open(file: &std::fs::File, path: &Path) -> Result<Self, RingError> {
        use std::os::fd::AsRawFd;
        let io = |e| RingError::Io(path.to_path_buf(), e);
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(io)?;
        // SAFETY: a shared mapping of the header only (the reader checked that the file holds
        // one); this process changes nothing in it but `sleepers`, through atomics, and every
        // other process accesses the words it shares only atomically.
        let map =
            unsafe { memmap2::MmapOptions::new().len(HEADER_SIZE).map_mut(&rw) }.map_err(io)?;
        Ok(Doorbell { map })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `map` is the header (HEADER_SIZE bytes, page aligned), owned by `self`; the
        // offsets used are the layout's, multiples of 8 inside it.
        unsafe { super::word(self, self.map.as_ptr(), offset) }
    }

    /// Sleeps until the writer's head passes `pos` (the reader's position), `timeout_ns`
    /// passes, or a signal comes; returns at once, with `false`, when the head already has.
    /// Returns `true` when it went to sleep (however it woke).
    pub fn wait(&self, pos: u64, timeout_ns: u64) -> bool {
        let wake = self.word(WAKE_OFFSET);
        let sleepers = self.word(SLEEPERS_OFFSET);
        let seen = wake.load(Ordering::Acquire);
        sleepers.fetch_add(1, Ordering::SeqCst);
        // A publish the writer made before it read `sleepers` is visible here; one it makes
        // after sees this sleeper and bumps `wake`, which makes the wait below return at once.
        let slept = self.word(HEAD_OFFSET).load(Ordering::SeqCst) <= pos;
        if slept {
            futex_wait(wake, seen as u32, timeout_ns);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
        slept
    }

    /// Readers inside [`Doorbell::wait`] now (any process).
    pub fn sleepers(&self) -> u64 {
        self.word(SLEEPERS_OFFSET).load(Ordering::Relaxed)
    }
}

// SAFETY: the mapping moves with the struct and is only accessed through atomics.
unsafe impl Send for Doorbell {}

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
pub(super) fn futex_wake(word: &AtomicU64) {
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
