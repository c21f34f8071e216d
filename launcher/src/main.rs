//! `strata`: the user command line.
fn main() {}
