//! Shared helpers for strata's integration tests, and `fsfuzz`: the
//! differential filesystem fuzzer that runs the same operation sequences on
//! kernel overlayfs and on unionfs over identical copies of the same layer
//! trees and reports any divergence (errno, visible tree, upper format) with
//! a minimised reproducer.
//!
//! Layout: [`spec`] builds layer trees, [`ops`] applies operations,
//! [`gen`] decodes bytes or seeds into scenarios, [`snapshot`] records and
//! compares trees (its docs list what is deliberately not compared),
//! [`diff`] runs, minimises and prints reproducers, [`mount`] mounts both
//! filesystems.

pub mod diff;
pub mod gen;
pub mod mount;
pub mod ops;
pub mod snapshot;
pub mod spec;
pub mod sys;

pub use diff::{check, run, Config, Divergence, Kind};
pub use gen::{scenario_from_bytes, scenario_from_seed};
pub use ops::{pattern, Op, RenameMode};
pub use spec::{LayerSpec, Node, NodeKind};

/// One differential test case: layer trees and the ops to run over them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Lower layers, top first (like `lowerdir=`).
    pub lowers: Vec<LayerSpec>,
    /// Initial content of the upper directory.
    pub upper: LayerSpec,
    /// Operations, applied in order to both mounts.
    pub ops: Vec<Op>,
}

/// The cargo-fuzz entry: decode `data` into a scenario (at most 40 ops) and
/// run it differentially. `Err` holds the divergence with a minimised
/// reproducer, or a harness error; `fuzz/` panics on it.
pub fn fuzz_one(data: &[u8]) -> Result<(), String> {
    let sc = scenario_from_bytes(data, 40);
    let cfg = Config::full().map_err(|e| format!("{e:#}"))?;
    check(&sc, &cfg)
}
