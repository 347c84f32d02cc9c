//! Benchmarks of xai.
