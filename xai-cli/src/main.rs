//! `xai`: the admin CLI of the xai gateway (a client of the admin API).
#![forbid(unsafe_code)]
fn main() {}
