//! Test support for xai end-to-end suites.
