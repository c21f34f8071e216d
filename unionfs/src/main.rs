//! `unionfs`: the mount program.
fn main() {}
