//! The gateway: latest prices from the quote table fanned out to many clients over WebSocket,
//! Server-Sent Events and plain HTTP, with per-connection conflation windows, delta updates,
//! sequence numbers, heartbeats, portfolios and limits on everything a client can make it do.
//! The client contract is `docs/protocol.md`.
//!
//! - [`server`]: the process: settings, listeners (SO_REUSEPORT), workers, shared counters.
//! - [`worker`]: one thread's poll loop: accept, HTTP/WebSocket/SSE I/O, ticks, flushes.
//! - [`session`]: one client's protocol state, sans I/O (clock passed in).
//! - [`market`]: a worker's view of every symbol, with encoded quotes cached per change.
//! - [`deflate`]: WebSocket compression (permessage-deflate), negotiated and inflated.
//! - [`encode`]: quote JSON (exact decimal prices) and delta masks.
//! - [`source`]: where quotes come from (the shared-memory quote table; stale when it dies).
//! - [`redis`]: quotes through Redis: the publisher beside book, and the replica source.
//! - [`synth`]: a synthetic market written into a quote table, for benchmarks and tests.
//! - [`http`]: request heads, query strings, REST endpoints, `/metrics`, `/healthz`, `/`.
//! - [`bars`]: bars for charts, read incrementally from the book's bar log.
//! - [`metrics`]: counters and latency histograms in Prometheus text.
//! - [`wheel`]: the timer wheel that wakes each connection when its window, heartbeat or
//!   timeout is due.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod bars;
pub mod deflate;
pub mod encode;
pub mod http;
pub mod market;
pub mod metrics;
pub mod redis;
pub mod server;
pub mod session;
pub mod source;
pub mod synth;
pub mod wheel;
pub mod worker;
