//! Link, IPv4 and UDP headers: finding the UDP payload in a captured frame, and building a
//! frame around a payload when writing a capture.
//!
//! Read: Ethernet II (with any number of 802.1Q / 802.1ad VLAN tags), Linux cooked (SLL) and
//! raw IPv4 link types; IPv4 with options; UDP. Frames that are not IPv4/UDP are skipped (not an
//! error); a frame that claims to be IPv4/UDP but whose headers do not fit is an error.
//! IPv4 fragments are an error too: MoldUDP64 packets are sized to fit one frame.

use core::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// pcap link type: Ethernet.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// pcap link type: raw IP (BSD value).
pub const LINKTYPE_RAW_BSD: u32 = 12;
/// pcap link type: raw IP.
pub const LINKTYPE_RAW: u32 = 101;
/// pcap link type: Linux cooked capture (`tcpdump -i any`).
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// pcap link type: raw IPv4.
pub const LINKTYPE_IPV4: u32 = 228;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address (the multicast group) and port.
    pub dst: SocketAddrV4,
    /// The UDP payload (a MoldUDP64 packet).
    pub payload: &'a [u8],
}

/// Why a frame that should hold UDP does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// The frame ends inside a header.
    Truncated(&'static str),
    /// An IPv4 header length below 20 bytes.
    BadIpHeaderLength(u8),
    /// A fragment of a larger datagram.
    Fragment,
    /// The UDP length field disagrees with the bytes present.
    BadUdpLength {
        /// UDP length field.
        declared: usize,
        /// Bytes available after the IP header.
        available: usize,
    },
    /// A link type this reader does not know.
    UnsupportedLinkType(u32),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NetError::Truncated(what) => write!(f, "frame ends inside its {what} header"),
            NetError::BadIpHeaderLength(ihl) => {
                write!(f, "IPv4 header length {ihl} words is below 5")
            }
            NetError::Fragment => {
                write!(f, "IPv4 fragment (MoldUDP64 packets are never fragmented)")
            }
            NetError::BadUdpLength {
                declared,
                available,
            } => {
                write!(
                    f,
                    "UDP length {declared} does not fit the {available} bytes after the IP header"
                )
            }
            NetError::UnsupportedLinkType(l) => write!(f, "unsupported link type {l}"),
        }
    }
}

impl std::error::Error for NetError {}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Finds the UDP datagram in a captured frame. `Ok(None)`: the frame is something else (ARP,
/// IPv6, TCP, ...) and is skipped.
pub fn udp_in_frame(linktype: u32, frame: &[u8]) -> Result<Option<UdpDatagram<'_>>, NetError> {
    let ip = match linktype {
        LINKTYPE_ETHERNET => {
            if frame.len() < 14 {
                return Err(NetError::Truncated("Ethernet"));
            }
            let mut ethertype = be16(frame, 12);
            let mut at = 14;
            while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
                if frame.len() < at + 4 {
                    return Err(NetError::Truncated("802.1Q"));
                }
                ethertype = be16(frame, at + 2);
                at += 4;
            }
            if ethertype != ETHERTYPE_IPV4 {
                return Ok(None);
            }
            &frame[at..]
        }
        LINKTYPE_LINUX_SLL => {
            if frame.len() < 16 {
                return Err(NetError::Truncated("Linux cooked"));
            }
            if be16(frame, 14) != ETHERTYPE_IPV4 {
                return Ok(None);
            }
            &frame[16..]
        }
        LINKTYPE_RAW | LINKTYPE_RAW_BSD | LINKTYPE_IPV4 => frame,
        other => return Err(NetError::UnsupportedLinkType(other)),
    };
    if ip.is_empty() {
        return Err(NetError::Truncated("IPv4"));
    }
    if ip[0] >> 4 != 4 {
        return Ok(None);
    }
    let ihl = ip[0] & 0x0f;
    if ihl < 5 {
        return Err(NetError::BadIpHeaderLength(ihl));
    }
    let hlen = ihl as usize * 4;
    if ip.len() < hlen {
        return Err(NetError::Truncated("IPv4"));
    }
    if ip[9] != IPPROTO_UDP {
        return Ok(None);
    }
    let frag = be16(ip, 6);
    if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
        return Err(NetError::Fragment);
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    // Ethernet pads short frames: trust the IP total length over the frame length.
    let total = (be16(ip, 2) as usize).clamp(hlen, ip.len());
    let udp = &ip[hlen..total];
    if udp.len() < 8 {
        return Err(NetError::Truncated("UDP"));
    }
    let declared = be16(udp, 4) as usize;
    if declared < 8 || declared > udp.len() {
        return Err(NetError::BadUdpLength {
            declared,
            available: udp.len(),
        });
    }
    Ok(Some(UdpDatagram {
        src: SocketAddrV4::new(src_ip, be16(udp, 0)),
        dst: SocketAddrV4::new(dst_ip, be16(udp, 2)),
        payload: &udp[8..declared],
    }))
}

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Ethernet address of an IPv4 multicast group (01:00:5e + low 23 bits), or a fixed
/// locally administered address for a unicast destination.
pub fn multicast_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    if ip.is_multicast() {
        [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
    } else {
        [0x02, 0x00, o[0], o[1], o[2], o[3]]
    }
}

/// Appends an Ethernet II + IPv4 + UDP frame carrying `payload` (UDP and IP checksums filled
/// in, TTL 32, IP identification `ip_id`).
pub fn write_udp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ip_id: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    out.extend_from_slice(&multicast_mac(*dst.ip()));
    let so = src.ip().octets();
    out.extend_from_slice(&[0x02, 0x00, so[0], so[1], so[2], so[3]]);
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip_at = out.len();
    out.extend_from_slice(&[0x45, 0x00]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&ip_id.to_be_bytes());
    out.extend_from_slice(&[0x40, 0x00, 32, IPPROTO_UDP, 0, 0]); // DF, TTL, proto, checksum
    out.extend_from_slice(&so);
    out.extend_from_slice(&dst.ip().octets());
    let ip_sum = checksum_fold(checksum_add(0, &out[ip_at..ip_at + 20]));
    out[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let udp_at = out.len();
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // pseudo-header: src, dst, zero, proto, UDP length
    let mut sum = checksum_add(0, &so);
    sum = checksum_add(sum, &dst.ip().octets());
    sum += IPPROTO_UDP as u32 + udp_len as u32;
    sum = checksum_add(sum, &out[udp_at..]);
    let udp_sum = match checksum_fold(sum) {
        0 => 0xffff,
        s => s,
    };
    out[udp_at + 6..udp_at + 8].copy_from_slice(&udp_sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(239, 100, 1, 1), 26400);
        let mut f = Vec::new();
        write_udp_frame(src, dst, 7, b"payload!", &mut f);
        assert_eq!(&f[..6], &[0x01, 0x00, 0x5e, 100, 1, 1]);
        let d = udp_in_frame(LINKTYPE_ETHERNET, &f).unwrap().unwrap();
        assert_eq!((d.src, d.dst, d.payload), (src, dst, &b"payload!"[..]));
        // IP header checksum verifies to 0
        assert_eq!(checksum_fold(checksum_add(0, &f[14..34])), 0);
        // Ethernet padding after the datagram is ignored
        f.extend_from_slice(&[0; 10]);
        assert_eq!(
            udp_in_frame(LINKTYPE_ETHERNET, &f)
                .unwrap()
                .unwrap()
                .payload,
            b"payload!"
        );
    }

    #[test]
    fn vlan_tags_and_raw_ip() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1);
        let dst = SocketAddrV4::new(Ipv4Addr::new(233, 54, 12, 111), 26477);
        let mut f = Vec::new();
        write_udp_frame(src, dst, 0, b"x", &mut f);
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 141]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(
            udp_in_frame(LINKTYPE_ETHERNET, &tagged)
                .unwrap()
                .unwrap()
                .dst,
            dst
        );
        assert_eq!(
            udp_in_frame(LINKTYPE_RAW, &f[14..])
                .unwrap()
                .unwrap()
                .payload,
            b"x"
        );
    }

    #[test]
    fn broken_frames_are_errors_and_others_skipped() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1);
        let dst = SocketAddrV4::new(Ipv4Addr::new(239, 0, 0, 1), 2);
        let mut f = Vec::new();
        write_udp_frame(src, dst, 0, b"abcdef", &mut f);
        for cut in 0..f.len() - 6 {
            assert!(
                udp_in_frame(LINKTYPE_ETHERNET, &f[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(udp_in_frame(LINKTYPE_ETHERNET, &arp), Ok(None));
        let mut tcp = f.clone();
        tcp[14 + 9] = 6;
        assert_eq!(udp_in_frame(LINKTYPE_ETHERNET, &tcp), Ok(None));
        let mut frag = f.clone();
        frag[14 + 6] = 0x20;
        assert_eq!(
            udp_in_frame(LINKTYPE_ETHERNET, &frag),
            Err(NetError::Fragment)
        );
        assert_eq!(
            udp_in_frame(999, &f),
            Err(NetError::UnsupportedLinkType(999))
        );
    }
}
