//! cowbench: copy-on-write benchmark across union filesystem backends.
fn main() {}
