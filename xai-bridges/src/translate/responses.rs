//! Translation to and from this protocol (filled in by its owner).
