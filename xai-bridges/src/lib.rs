//! bridges
