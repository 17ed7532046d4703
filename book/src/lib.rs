//! Order books and the latest-quote table: built in issue "Book and conflation" (order 3 of 7).
//! This crate is a placeholder in the workspace until then; it holds no code yet.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
