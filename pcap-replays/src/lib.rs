//! Captures to replay, and the tools that make them.
//!
//! - [`market`]: a deterministic market generator (a trading session from a seed).
//! - [`packetize`]: ITCH messages into MoldUDP64 packets, as a feed sends them.
//! - [`lines`]: packets onto lines A and B with injected faults, into a pcap.
//! - [`passes`]: a looped replay's passes, each with its sequence numbers and clock moved on.
//! - [`session`]: the pipeline from any message source (generator, BinaryFILE) to a pcap or a
//!   BinaryFILE, with progress for long runs.
//! - [`rng`], [`date`]: deterministic randomness and capture dates.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod date;
pub mod lines;
pub mod market;
pub mod packetize;
pub mod passes;
pub mod replay;
pub mod rng;
pub mod session;
