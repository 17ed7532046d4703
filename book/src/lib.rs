//! Order books and latest prices for every instrument of a TotalView-ITCH 5.0 feed.
//!
//! - [`books`]: order-by-order books with aggregated levels, last trade and volume per
//!   instrument, and the invariants (`Books::validate`).
//! - [`replay`]: `book replay`: a capture through the same arbitration as the live path, into
//!   the books.
//! - [`quotes`]: the shared-memory quote table (a seqlock slot per instrument) and change feed.
//! - [`conflate`]: the conflation thread: feed ring (and journal) → books → quote table.
//!
//! Still to come (the book issue): rebuilds after an unrecovered gap (full re-request from
//! sequence 1), bars, anomaly flags.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod barlog;
pub mod bars;
pub mod books;
pub mod conflate;
pub mod ladder;
pub mod quotes;
pub mod rebuild;
pub mod replay;
