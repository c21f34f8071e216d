//! The strata container runtime library behind the `strata` binary.
