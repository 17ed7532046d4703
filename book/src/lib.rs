//! Order books and latest prices for every instrument of a TotalView-ITCH 5.0 feed.
//!
//! - [`books`]: order-by-order books with aggregated levels, last trade and volume per
//!   instrument, and the invariants (`Books::validate`).
//! - [`replay`]: `book replay`: a capture through the same arbitration as the live path, into
//!   the books.
//! - [`orders`]: the live orders by reference (an open-addressing table that can be prefetched);
//!   [`ladder`]: one side's price levels.
//! - [`quotes`]: the shared-memory quote table (a seqlock slot per instrument) and change feed.
//! - [`conflate`]: the conflation thread: feed ring (and journal) → books → quote table.
//! - [`consolidate`]: one symbol's quotes on several venues into one (best prices from trusted
//!   venues only, last, volume, VWAP).
//! - [`bars`], [`barlog`]: 1-second and 1-minute bars and the log the gateway charts from;
//!   [`rebuild`]: a channel rebuilt from a full re-request after an unrecovered gap.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod barlog;
pub mod bars;
pub mod books;
pub mod conflate;
pub mod consolidate;
pub mod ladder;
pub mod orders;
pub mod quotes;
pub mod rebuild;
pub mod replay;
