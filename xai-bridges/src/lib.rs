//! # xai-bridges
//!
//! Protocol adapters of the xai gateway: each wire protocol implements [`xai_core::ProtocolAdapter`] — reading
//! what routing needs from a client body, rendering errors and model lists in the protocol's own shape, rewriting
//! a same-protocol request for passthrough (only model and auth change), extracting usage from responses and
//! streams, and classifying upstream failures for the key pool.
//!
//! ```
//! use xai_bridges::adapters;
//! use xai_core::Protocol;
//! let all = adapters();
//! assert!(all.get(Protocol::OpenAiChat).is_some());
//! ```
//!
//! Same protocol in and out is native passthrough for all four protocols. Across protocols, [`translate`] decodes
//! each protocol into the canonical IR ([`xai_core::ir`]) and encodes it back out, requests, complete answers and
//! streams, for all 16 client × upstream pairs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod anthropic;
pub mod common;
pub mod gemini;
pub mod openai_chat;
pub mod responses;
pub mod sse;
pub mod tap;
pub mod translate;

use std::sync::Arc;

use xai_core::Adapters;

/// Every adapter this crate provides.
pub fn adapters() -> Adapters {
    Adapters::default()
        .with(Arc::new(openai_chat::OpenAiChat))
        .with(Arc::new(responses::OpenAiResponses))
        .with(Arc::new(anthropic::Anthropic))
        .with(Arc::new(gemini::Gemini))
}

#[cfg(test)]
pub(crate) fn fixtures_dir() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates =
        [here.join("../../shared/fixtures"), here.join("../shared/fixtures"), "/work/shared/fixtures".into()];
    candidates.into_iter().find(|p| p.is_dir()).expect("shared/fixtures not found beside the repository")
}
