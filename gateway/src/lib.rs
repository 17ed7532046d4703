//! The WebSocket/SSE fan-out gateway: built in issue "Gateway" (order 4 of 7).
//! This crate is a placeholder in the workspace until then; it holds no code yet.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
