//! Runnable examples of embedding xai.
