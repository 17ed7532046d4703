//! The feed handler's library: Nasdaq TotalView-ITCH 5.0 and its transports, and the capture
//! formats used to record and replay them.
//!
//! - [`itch`]: the 23 ITCH 5.0 messages, read in place (zerocopy) and written.
//! - [`moldudp64`]: MoldUDP64 downstream and request packets.
//! - [`soupbintcp`]: SoupBinTCP 3.0 / 4.1 framing, for the snapshot path.
//! - [`capture`]: pcap, pcapng and BinaryFILE readers and writers.
//! - [`report`]: what `feed-handler decode` prints about a capture.
//! - [`fuzzing`]: the bodies of the `cargo fuzz` targets, also run by the tests.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod agent;
pub mod arbiter;
pub mod capture;
pub mod config;
pub mod counters;
pub mod fuzzing;
pub mod itch;
pub mod journal;
pub mod moldudp64;
pub mod report;
pub mod ring;
pub mod sock;
pub mod soupbintcp;
