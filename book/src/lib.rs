//! Order books and latest prices for every instrument of a TotalView-ITCH 5.0 feed.
//!
//! - [`books`]: order-by-order books with aggregated levels, last trade and volume per
//!   instrument, and the invariants (`Books::validate`).
//! - [`replay`]: `book replay`: a capture through the same arbitration as the live path, into
//!   the books.
//!
//! Still to come (the book issue): the conflation thread on the ring, the shared-memory quote
//! table and change feed, stale marking and rebuilds on the live path, bars and anomaly flags.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod books;
pub mod replay;
