//! Incremental decoders for streamed response bodies.
//!
//! Decoders never see timestamps: the caller stamps a chunk's arrival *before*
//! feeding it here, so parsing cost never shifts a measured instant.

pub mod ndjson;
pub mod sse;

pub use ndjson::NdjsonDecoder;
pub use sse::{SseDecoder, SseEvent};
