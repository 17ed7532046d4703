//! What the benchmarks that run the system as processes share: starting the project's binaries,
//! stopping them, waiting for them, and asking a gateway over HTTP.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// Children stopped (SIGTERM, then waited for) when this is dropped, the last started first:
/// a pipeline stops from its source.
#[derive(Debug, Default)]
pub struct Kill(pub Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            // SAFETY: signalling a child we started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// Makes `cmd`'s process start bound to CPU `cpu` (`sched_setaffinity` before `exec`, so a
/// runtime that sizes its thread pool by the CPUs it may use, as tokio's does, sees one). A CPU
/// this machine does not have leaves the process unbound.
pub fn pin_at_exec(cmd: &mut std::process::Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and makes one system call
    // on a set built on its own stack: no allocation, no lock, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        })
    };
}

/// A binary of this build (beside the running `bench`).
pub fn exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .expect("current exe")
        .with_file_name(name)
}

/// GET over a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    use std::io::Write;
    write!(s, "GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let code = r.get(9..12)?.parse().ok()?;
    Some((
        code,
        r.split_once("\r\n\r\n")
            .map_or(String::new(), |x| x.1.to_string()),
    ))
}

/// One value of a gateway's `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `f` every 100 ms until it holds, for at most `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > Duration::from_secs(secs) {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A TCP port free on 127.0.0.1 just now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Microseconds as milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}
