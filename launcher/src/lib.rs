//! The strata container runtime library behind the `strata` binary.
//!
//! The command line is in [`cli`]; each group of commands has its own module.

pub mod cli;
pub mod registry;
