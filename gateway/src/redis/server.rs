//! Real `redis-server` processes on loopback, for the tests and `scripts/bench redis`: one plain
//! server, or a Redis Cluster of masters built with `redis-cli --cluster create`. Nothing here is
//! used by the gateway itself.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Whether `redis-server` and `redis-cli` are installed.
pub fn installed() -> bool {
    ["redis-server", "redis-cli"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A port p of 127.0.0.1 with p + 10000 (a cluster node's bus port) free too.
pub fn free_port_pair() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 16;
    loop {
        let p = base + NEXT.fetch_add(1, Ordering::Relaxed) % 8000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
}

/// `redis-cli -p PORT ARGS...`'s output ("" if it could not run, or gave no answer in 10 s:
/// whatever holds the port may accept and never answer).
pub fn cli(port: u16, args: &[&str]) -> String {
    let Ok(mut child) = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return String::new();
    };
    let mut stdout = child.stdout.take().expect("piped");
    // read as it comes (a long answer would fill the pipe); the end comes when it exits or dies
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if answered {
        String::from_utf8_lossy(&out).into_owned()
    } else {
        String::new()
    }
}

/// One redis-server without persistence (a restart comes back empty), killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one on `port` working in `dir` (created; removed when dropped), as a cluster node
    /// if `cluster`, and waits until it answers PING.
    pub fn start(port: u16, dir: &Path, cluster: bool) -> Result<RedisServer, String> {
        Self::start_with(port, dir, cluster, &[])
    }

    /// [`RedisServer::start`] with more `redis-server` arguments.
    pub fn start_with(
        port: u16,
        dir: &Path,
        cluster: bool,
        extra: &[&str],
    ) -> Result<RedisServer, String> {
        let mut n = Self::unstarted(port, dir, cluster, extra);
        n.restart()?;
        Ok(n)
    }

    fn unstarted(port: u16, dir: &Path, cluster: bool, extra: &[&str]) -> RedisServer {
        RedisServer {
            child: None,
            port,
            dir: dir.to_path_buf(),
            cluster,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// [`RedisServer::start_with`] on a free port (a port pair: [`free_port_pair`]); another
    /// one, up to 3 times, when the server exits before answering (another process took the
    /// port between the check and the server's bind).
    pub fn start_free(dir: &Path, cluster: bool, extra: &[&str]) -> Result<RedisServer, String> {
        let mut n = Self::unstarted(0, dir, cluster, extra);
        let mut tries = 0;
        loop {
            n.port = free_port_pair();
            tries += 1;
            match n.launch() {
                Ok(()) => return Ok(n),
                Err((true, e)) if tries < 3 => eprintln!("{e}; another port"),
                Err((_, e)) => return Err(e),
            }
        }
    }

    /// Starts it again (after [`RedisServer::kill`]); a cluster node rejoins from its nodes file.
    pub fn restart(&mut self) -> Result<(), String> {
        self.launch().map_err(|e| e.1)
    }

    /// Starts the process and waits until it answers: `Err((exited, why))`, `exited` when it
    /// ended by itself (its log's last lines are in `why`).
    fn launch(&mut self) -> Result<(), (bool, String)> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| (false, format!("{}: {e}", self.dir.display())))?;
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let mut c = Command::new("redis-server");
        c.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            let conf = format!("nodes-{}.conf", self.port);
            c.args(["--cluster-enabled", "yes", "--cluster-config-file", &conf]);
        }
        c.args(&self.extra);
        let child = c.spawn().map_err(|e| {
            (
                false,
                format!("redis-server: {e} (apt-get install redis-server)"),
            )
        })?;
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let tail = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(3)..].join(" | ")
        };
        let ours = format!("process_id:{}", child.id());
        loop {
            // a server that cannot bind its port exits at once
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err((
                    true,
                    format!(
                        "redis-server on {} exited ({status}) before answering: {}",
                        self.port,
                        tail()
                    ),
                ));
            }
            // this process's answer (another server that took the port answers too, with its
            // own process ID); a server with a password answers NOAUTH: up all the same
            let info = cli(self.port, &["INFO", "server"]);
            if info.starts_with("NOAUTH") || info.lines().any(|l| l.trim() == ours) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err((
                    false,
                    format!(
                        "redis-server on {} did not answer in 10 s: {}",
                        self.port,
                        tail()
                    ),
                ));
            }
        }
    }

    /// Kills it (SIGKILL: nothing saved, connections reset).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's process ID while it runs (to stop and continue it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `masters` nodes (no replicas), node `k` working in `DIR-k` (removed when
/// it is dropped, so nothing is left behind): every slot assigned and `cluster_state:ok` on each
/// node before it returns.
pub fn cluster(masters: usize, dir: &Path) -> Result<Vec<RedisServer>, String> {
    cluster_with_replicas(masters, 0, &[], dir)
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each (the first `masters`
/// nodes returned are the masters), `extra` arguments to every `redis-server`.
pub fn cluster_with_replicas(
    masters: usize,
    replicas: usize,
    extra: &[&str],
    dir: &Path,
) -> Result<Vec<RedisServer>, String> {
    let nodes = (0..masters * (1 + replicas))
        .map(|k| {
            let node_dir = PathBuf::from(format!("{}-{k}", dir.display()));
            RedisServer::start_free(&node_dir, true, extra)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
    create_cluster(nodes, &addrs, replicas, &[])
}

/// Makes a Redis Cluster of `nodes` (started as cluster nodes), reached by `redis-cli` at
/// `addrs` with `cli_args` before its own (e.g. `--tls --cacert FILE`), `replicas` per master;
/// returns them once every slot is assigned and each says `cluster_state:ok`.
pub fn create_cluster(
    nodes: Vec<RedisServer>,
    addrs: &[String],
    replicas: usize,
    cli_args: &[&str],
) -> Result<Vec<RedisServer>, String> {
    let out = Command::new("redis-cli")
        .args(cli_args)
        .args(["--cluster", "create"])
        .args(addrs)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &nodes {
        while !cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            if Instant::now() > deadline {
                return Err("the cluster did not become ok in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(nodes)
}

/// Makes each of `lists` (key, records) on the plain server at `addr` hold exactly those
/// records, oldest first (`DEL`, then `RPUSH` 100 at a time, pipelined): charts as full as a
/// trading day leaves them, for a test or the benchmark to load.
pub fn fill_lists(
    addr: SocketAddr,
    lists: impl Iterator<Item = (String, Vec<Vec<u8>>)>,
) -> Result<(), String> {
    use super::conn::{Access, Conn};
    let t = Duration::from_secs(30);
    let mut c = Conn::connect(addr, t, t, &Access::default())?;
    let mut failed = None;
    let mut read = |c: &mut Conn| {
        c.flush()?;
        c.read_each(Instant::now() + t, |_, e| {
            if let Some(e) = e {
                failed.get_or_insert_with(|| e.to_string());
            }
        })
    };
    for (i, (key, records)) in lists.enumerate() {
        c.queue(&[b"DEL", key.as_bytes()]);
        for chunk in records.chunks(100) {
            let mut args: Vec<&[u8]> = vec![b"RPUSH", key.as_bytes()];
            args.extend(chunk.iter().map(Vec::as_slice));
            c.queue(&args);
        }
        if i % 128 == 127 {
            read(&mut c)?;
        }
    }
    read(&mut c)?;
    match failed {
        Some(e) => Err(format!("filling lists: {e}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_cannot_start_says_why_at_once_and_another_port_is_tried() {
        if !installed() {
            eprintln!("SKIPPED: no redis-server");
            return;
        }
        let dir = std::env::temp_dir().join(format!("redis-taken-{}", std::process::id()));
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = RedisServer::start(port, &dir, false).unwrap_err();
        assert!(e.contains("exited") && e.contains("in use"), "{e}");
        let up = RedisServer::start_free(&dir, false, &[]).unwrap();
        assert_ne!(up.port, port);
        assert_eq!(cli(up.port, &["PING"]).trim(), "PONG");
    }
}
