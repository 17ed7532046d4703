//! One blocking connection to a Redis node: commands are queued into an output buffer and
//! written together (a pipeline), replies are read into a bounded buffer and parsed in place.

use super::resp::{self, Reply};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The receive buffer never grows past this (one reply must fit).
const MAX_BUF: usize = resp::MAX_BULK + 64 * 1024;

/// A node's socket, in clear or under TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<super::tls::Stream>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// How every connection reaches Redis: credentials sent first, and TLS.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Sent first on every connection (`AUTH`), when Redis asks for a password.
    pub auth: Option<Auth>,
    /// TLS on every connection (`rediss://`), when Redis listens with `tls-port`.
    pub tls: Option<super::tls::Tls>,
}

impl Access {
    /// Credentials only, in clear.
    pub fn with_auth(auth: Auth) -> Access {
        Access {
            auth: Some(auth),
            tls: None,
        }
    }
}

/// A connection.
pub struct Conn {
    s: Stream,
    addr: SocketAddr,
    buf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
    scratch: Box<[u8; 64 * 1024]>,
    /// Replies still owed for commands written.
    pub owed: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tls = matches!(self.s, Stream::Tls(_));
        write!(f, "Conn({}, tls {tls}, owed {})", self.addr, self.owed)
    }
}

/// Why a connection failed.
pub fn err(addr: SocketAddr, e: impl std::fmt::Display) -> String {
    format!("redis {addr}: {e}")
}

/// Credentials every connection sends first (`AUTH`): a password (`requirepass`), and a user
/// name for a Redis 6 ACL user. Never printed: `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// ACL user (none: the default user).
    pub user: Option<String>,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth(user {:?}, password hidden)", self.user)
    }
}

impl Auth {
    /// Parses the first line of a credentials file: `PASSWORD`, or `USER PASSWORD`, split at
    /// whitespace (so a password with a space cannot be given). (A file, not an argument:
    /// arguments show in `ps` to every user of the host.)
    pub fn parse(text: &str) -> Result<Auth, String> {
        let line = text.lines().next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(p), None, None) => Ok(Auth {
                user: None,
                password: p.to_string(),
            }),
            (Some(u), Some(p), None) => Ok(Auth {
                user: Some(u.to_string()),
                password: p.to_string(),
            }),
            (None, ..) => Err("no password on the first line".into()),
            _ => Err("the first line must be PASSWORD or USER PASSWORD".into()),
        }
    }

    /// Reads a credentials file (see [`Auth::parse`]).
    pub fn from_file(path: &std::path::Path) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Auth::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Conn {
    /// Connects within `timeout`, with TLS and authenticated as `access` says; later reads
    /// wait at most `read_timeout` each.
    pub fn connect(
        addr: SocketAddr,
        timeout: Duration,
        read_timeout: Duration,
        access: &Access,
    ) -> Result<Conn, String> {
        let mut c = Self::open(addr, timeout, read_timeout, access.tls.as_ref())?;
        if let Some(a) = &access.auth {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &a.user {
                args.push(u.as_bytes());
            }
            args.push(a.password.as_bytes());
            // the server's error (WRONGPASS, or "no password is set") names no secret
            c.call(&args, timeout.max(Duration::from_secs(1)), |_| ())
                .map_err(|e| format!("{e} (AUTH)"))?;
        }
        Ok(c)
    }

    fn open(
        addr: SocketAddr,
        timeout: Duration,
        read_timeout: Duration,
        tls: Option<&super::tls::Tls>,
    ) -> Result<Conn, String> {
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| err(addr, e))?;
        s.set_nodelay(true).map_err(|e| err(addr, e))?;
        s.set_write_timeout(Some(timeout.max(Duration::from_secs(1))))
            .map_err(|e| err(addr, e))?;
        let s = match tls {
            None => Stream::Plain(s),
            Some(t) => {
                // the handshake waits as long as a connection may take
                s.set_read_timeout(Some(timeout))
                    .map_err(|e| err(addr, e))?;
                Stream::Tls(Box::new(t.connect(addr, s).map_err(|e| err(addr, e))?))
            }
        };
        s.tcp()
            .set_read_timeout(Some(read_timeout))
            .map_err(|e| err(addr, e))?;
        Ok(Conn {
            s,
            addr,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            out: Vec::with_capacity(64 * 1024),
            scratch: Box::new([0; 64 * 1024]),
            owed: 0,
        })
    }

    /// Reads that never wait (a busy-polling reader) or that wait up to the read timeout.
    pub fn set_nonblocking(&mut self, on: bool) -> Result<(), String> {
        self.s
            .tcp()
            .set_nonblocking(on)
            .map_err(|e| err(self.addr, e))
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a command (written by the next [`Conn::flush`]).
    pub fn queue(&mut self, args: &[&[u8]]) {
        resp::command(&mut self.out, args);
        self.owed += 1;
    }

    /// Queues a command of `argc` arguments that `f` writes with [`resp::bulk`].
    pub fn queue_parts(&mut self, argc: usize, f: impl FnOnce(&mut Vec<u8>)) {
        resp::array_header(&mut self.out, argc);
        f(&mut self.out);
        self.owed += 1;
    }

    /// Queues a command whose only answers are pushed messages (SUBSCRIBE and friends count
    /// their confirmations themselves).
    pub fn queue_push(&mut self, args: &[&[u8]]) {
        resp::command(&mut self.out, args);
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self
            .s
            .write_all(&self.out)
            .and_then(|()| self.s.flush())
            .map_err(|e| err(self.addr, e));
        self.out.clear();
        r
    }

    /// The next reply, given to `f`: `Ok(None)` if none came within the read timeout.
    pub fn next<R, F: FnOnce(Reply<'_>) -> R>(&mut self, f: F) -> Result<Option<R>, String> {
        let mut f = f;
        loop {
            match self.take(f)? {
                Ok(out) => return Ok(Some(out)),
                Err(back) => f = back,
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.buf.len() >= MAX_BUF {
                return Err(err(self.addr, "a reply larger than 16 MiB"));
            }
            match self.s.read(&mut self.scratch[..]) {
                Ok(0) => return Err(err(self.addr, "connection closed by the server")),
                Ok(n) => self.buf.extend_from_slice(&self.scratch[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(err(self.addr, e)),
            }
        }
    }

    /// The next reply already received, without reading the socket.
    pub fn next_buffered<R, F: FnOnce(Reply<'_>) -> R>(
        &mut self,
        f: F,
    ) -> Result<Option<R>, String> {
        Ok(self.take(f)?.ok())
    }

    /// A whole reply at the front of the buffer, given to `f` and consumed; `f` back if there
    /// is none yet.
    fn take<R, F: FnOnce(Reply<'_>) -> R>(&mut self, f: F) -> Result<Result<R, F>, String> {
        let Some((r, used)) =
            resp::parse(&self.buf[self.start..]).map_err(|e| err(self.addr, e))?
        else {
            return Ok(Err(f));
        };
        let out = f(r);
        self.start += used;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.owed = self.owed.saturating_sub(1);
        Ok(Ok(out))
    }

    /// The next reply, waiting until `deadline`.
    pub fn next_by<R>(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(Reply<'_>) -> R,
    ) -> Result<R, String> {
        loop {
            if let Some(r) = self.next(&mut f)? {
                return Ok(r);
            }
            if Instant::now() >= deadline {
                return Err(err(self.addr, "no reply in time"));
            }
        }
    }

    /// Reads every reply owed, by `deadline`: `f` takes each one's index (0 for the first read
    /// here) and its error reply if it was one. An `Err` is the connection failing: the replies
    /// not given to `f` by then never came.
    pub fn read_each(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(usize, Option<&str>),
    ) -> Result<(), String> {
        self.read_each_reply(deadline, |n, r| f(n, r.error().as_deref()))
    }

    /// [`Conn::read_each`], `f` taking each reply whole.
    pub fn read_each_reply(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(usize, &Reply<'_>),
    ) -> Result<(), String> {
        let mut n = 0;
        while self.owed > 0 {
            self.next_by(deadline, |r| f(n, &r))?;
            n += 1;
        }
        Ok(())
    }

    /// Sends one command and waits for its reply (an error reply is an `Err`).
    pub fn call<R>(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        f: impl FnMut(Reply<'_>) -> R,
    ) -> Result<R, String> {
        self.queue(args);
        self.flush()?;
        let deadline = Instant::now() + timeout;
        let mut f = f;
        self.next_by(deadline, |r| match r.error() {
            Some(e) => Err(e),
            None => Ok(f(r)),
        })?
        .map_err(|e| err(self.addr, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_and_what_they_show() {
        let a = Auth::parse("s3cret\nignored second line\n").unwrap();
        assert_eq!((a.user.as_deref(), a.password.as_str()), (None, "s3cret"));
        let a = Auth::parse("  feed-reader  s3cret  ").unwrap();
        assert_eq!(
            (a.user.as_deref(), a.password.as_str()),
            (Some("feed-reader"), "s3cret")
        );
        assert!(Auth::parse("").is_err());
        assert!(Auth::parse("\nlater").is_err(), "the first line counts");
        assert!(Auth::parse("a b c").is_err());
        let shown = format!("{a:?}");
        assert!(shown.contains("feed-reader") && !shown.contains("s3cret"));
    }
}
