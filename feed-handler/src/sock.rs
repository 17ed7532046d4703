//! UDP sockets for the feed: multicast receivers (joined, large buffer, kernel timestamps, drop
//! counter), the unicast socket for re-requests, a multicast sender, and batched receive with
//! `recvmmsg(2)` that hands out each datagram with its kernel receive time.

use crate::config::LineConfig;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Largest datagram received (MoldUDP64 packets on the feed are at most about 1,500 bytes;
/// larger ones are cut and so fail their MoldUDP64 check and are counted).
pub const MAX_DATAGRAM: usize = 9000;

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives for the call; the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A receiver joined to one multicast line. Returns the socket and, when the kernel granted
/// less receive buffer than asked for, a warning to log.
pub fn multicast_receiver(
    line: &LineConfig,
    rcvbuf_bytes: usize,
) -> io::Result<(UdpSocket, Option<String>)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Bound to the group, the socket gets only this group's datagrams even when another group
    // uses the same port.
    s.bind(&SockAddr::from(SocketAddrV4::new(line.group, line.port)))?;
    s.join_multicast_v4(&line.group, &line.interface)?;
    let what = format!("{}:{}", line.group, line.port);
    let warning = receive_setup(&s, rcvbuf_bytes, &what)?;
    Ok((s.into(), warning))
}

/// A non-blocking unicast socket on an ephemeral port, for re-requests and their replies,
/// with `rcvbuf_bytes` of receive buffer: a recovery keeps hundreds of requests outstanding,
/// and their replies (a packet of up to ~1,400 bytes each) arrive in a burst that the
/// default buffer (rmem_default, ~208 KiB) drops. Returns the socket and, when the kernel
/// granted less than asked for, a warning to log.
pub fn unicast_socket(
    bind: Ipv4Addr,
    rcvbuf_bytes: usize,
) -> io::Result<(UdpSocket, Option<String>)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SockAddr::from(SocketAddrV4::new(bind, 0)))?;
    let warning = receive_setup(&s, rcvbuf_bytes, "the re-request socket")?;
    Ok((s.into(), warning))
}

/// What every receiving socket gets: the receive buffer asked for (a warning when the kernel
/// clamps it), non-blocking reads, kernel receive timestamps and the drop count (SO_RXQ_OVFL).
fn receive_setup(s: &Socket, rcvbuf_bytes: usize, what: &str) -> io::Result<Option<String>> {
    let mut warning = None;
    if rcvbuf_bytes > 0 {
        s.set_recv_buffer_size(rcvbuf_bytes)?;
        // Linux reports twice what it reserves for the payload.
        let got = s.recv_buffer_size()? / 2;
        if got < rcvbuf_bytes {
            warning = Some(format!(
                "{what}: SO_RCVBUF is {got} bytes, not the {rcvbuf_bytes} asked for: raise net.core.rmem_max (see docs/deployment.md)"
            ));
        }
    }
    s.set_nonblocking(true)?;
    setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    Ok(warning)
}

/// A blocking sender of multicast on `interface` (loopback works with 127.0.0.1), TTL 1,
/// looped back to local receivers, from `source` (port 0: any).
pub fn multicast_sender(interface: Ipv4Addr, source: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(source))?;
    s.set_multicast_if_v4(&interface)?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_send_buffer_size(4 << 20)?;
    Ok(s.into())
}

/// Pins the calling thread to `cpu`. Unlike a library that only offers the CPUs of the
/// current mask, this can move a thread to any CPU of the machine (a child inherits its
/// parent's mask). Returns false (and changes nothing) if the kernel refuses.
pub fn pin_current_thread(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it (cpu is below
    // CPU_SETSIZE); sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Wall-clock time, ns since the epoch (the clock kernel timestamps use).
#[inline]
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const CMSG_SPACE: usize = 128;

/// Buffers for one `recvmmsg` call of up to `n` datagrams; nothing is allocated per call.
pub struct RecvBatch {
    bufs: Vec<u8>,
    cmsgs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    got: usize,
}

impl core::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "RecvBatch({} slots, {} received)",
            self.hdrs.len(),
            self.got
        )
    }
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` point only into this struct's own buffers and
// are rewritten before every use; nothing is shared between threads.
unsafe impl Send for RecvBatch {}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The payload.
    pub payload: &'a [u8],
    /// Kernel receive time, ns since the epoch (`None` if the kernel gave none).
    pub kernel_ns: Option<u64>,
    /// The socket's cumulative count of datagrams dropped for lack of buffer (SO_RXQ_OVFL).
    pub dropped: Option<u32>,
}

impl RecvBatch {
    /// Room for `n` datagrams.
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        RecvBatch {
            bufs: vec![0; n * MAX_DATAGRAM],
            cmsgs: vec![0; n * CMSG_SPACE],
            // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is valid.
            iovs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            // SAFETY: as above.
            hdrs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            got: 0,
        }
    }

    /// Reads what is waiting on `fd` without blocking; returns how many datagrams came.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.hdrs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * MAX_DATAGRAM..].as_mut_ptr() as *mut libc::c_void,
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i * CMSG_SPACE..].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CMSG_SPACE as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers of the stated sizes owned by `self`, which
        // outlive the call; the kernel writes at most those sizes.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.got = 0;
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        self.got = r as usize;
        Ok(self.got)
    }

    /// Datagram `i` of the last `recv`.
    pub fn get(&self, i: usize) -> Datagram<'_> {
        assert!(i < self.got);
        let len = (self.hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
        let payload = &self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len];
        let (mut kernel_ns, mut dropped) = (None, None);
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: `h` is the header the kernel filled in; the CMSG macros walk its control
        // buffer within `msg_controllen`, which the kernel set to what it wrote.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
                let data = libc::CMSG_DATA(c);
                if level == libc::SOL_SOCKET && kind == libc::SO_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(data as *const libc::timespec);
                    kernel_ns = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                } else if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL {
                    dropped = Some(std::ptr::read_unaligned(data as *const u32));
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        Datagram {
            payload,
            kernel_ns,
            dropped,
        }
    }
}

/// Waits until one of `fds` is readable or `timeout_us` passes (the `park` idle strategy).
pub fn wait_readable(fds: &[RawFd], timeout_us: u64) {
    let mut p: [libc::pollfd; 8] = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 8];
    let n = fds.len().min(8);
    for (i, &fd) in fds.iter().take(n).enumerate() {
        p[i] = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
    }
    let ms = timeout_us.div_ceil(1000).min(i32::MAX as u64) as libc::c_int;
    // SAFETY: `p` holds `n` valid pollfd entries.
    unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_multicast_with_kernel_timestamps() {
        let line = LineConfig {
            group: Ipv4Addr::new(239, 199, 7, 7),
            port: 31_877,
            interface: Ipv4Addr::LOCALHOST,
        };
        let (rx, _warn) = multicast_receiver(&line, 1 << 20).unwrap();
        let tx = multicast_sender(
            Ipv4Addr::LOCALHOST,
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        )
        .unwrap();
        let before = realtime_ns();
        for i in 0..5u8 {
            tx.send_to(&[i; 100], SocketAddrV4::new(line.group, line.port))
                .unwrap();
        }
        let mut b = RecvBatch::new(8);
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = b.recv(rx.as_raw_fd()).unwrap();
            if n == 0 {
                wait_readable(&[rx.as_raw_fd()], 100_000);
            }
            for i in 0..n {
                let d = b.get(i);
                let ts = d.kernel_ns.expect("kernel timestamp");
                assert!(ts >= before - 1_000_000 && ts <= realtime_ns());
                got.push(d.payload.to_vec());
            }
        }
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p, &vec![i as u8; 100]);
        }
    }

    /// The re-request socket gets the buffer asked for and counts what the kernel drops, as a
    /// line's does (it had the default ~208 KiB, which a catching-up recovery's burst of
    /// replies overflowed, and its drops went uncounted: `socket_drops` said 0).
    #[test]
    fn the_rerequest_socket_has_its_buffer_and_counts_its_drops() {
        let (big, warn) = unicast_socket(Ipv4Addr::LOCALHOST, 4 << 20).unwrap();
        let got = socket2::SockRef::from(&big).recv_buffer_size().unwrap() / 2;
        assert!(
            got >= 4 << 20 || warn.is_some(),
            "{got} bytes and no warning"
        );
        // a small one overflows, and says by how much
        let (rx, _) = unicast_socket(Ipv4Addr::LOCALHOST, 4096).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..200u8 {
            tx.send_to(&[i; 1_400], to).unwrap();
        }
        let mut b = RecvBatch::new(64);
        let mut kept = 0;
        loop {
            let n = b.recv(rx.as_raw_fd()).unwrap();
            if n == 0 {
                break;
            }
            kept += n;
        }
        assert!(kept > 0 && kept < 200, "{kept} of 200 kept");
        // the count rides on the next datagram queued after the drops
        tx.send_to(b"after", to).unwrap();
        while b.recv(rx.as_raw_fd()).unwrap() == 0 {
            wait_readable(&[rx.as_raw_fd()], 100_000);
        }
        let dropped = b
            .get(0)
            .dropped
            .expect("SO_RXQ_OVFL on the re-request socket");
        assert_eq!(
            kept as u32 + dropped,
            200,
            "every datagram kept or counted dropped"
        );
    }
}
