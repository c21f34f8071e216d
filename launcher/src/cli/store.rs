//! `strata store` commands: df, verify, gc.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use layers_format::Store;

use super::Globals;

/// `store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show real against logical bytes and the dedup ratio.
    Df {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob and index; exit 1 if anything is damaged or missing.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove layers and blobs no image or container uses, and leftovers of
    /// interrupted imports.
    Gc {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run one `store` command.
pub fn run(cmd: Command, globals: &Globals) -> anyhow::Result<ExitCode> {
    let store_dir = globals.store_dir();
    let store = Store::open(&store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::Df { json } => {
            let du = store.df()?;
            if json {
                serde_json::to_writer_pretty(&mut out, &du)?;
                writeln!(out)?;
            } else {
                writeln!(out, "store:         {}", store.root().display())?;
                writeln!(out, "images:        {}", du.images)?;
                writeln!(out, "layers:        {}", du.layers)?;
                writeln!(out, "blobs:         {}", du.blobs)?;
                writeln!(
                    out,
                    "real bytes:    {} (blobs {}, indexes {})",
                    du.real_bytes, du.blob_bytes, du.index_bytes
                )?;
                if du.kept_blob_bytes > 0 {
                    writeln!(
                        out,
                        "kept blobs:    {} (compressed layers as pulled, for push)",
                        du.kept_blob_bytes
                    )?;
                }
                writeln!(out, "logical bytes: {}", du.logical_bytes)?;
                writeln!(out, "dedup ratio:   {:.2}", du.dedup_ratio)?;
                if du.temp_bytes > 0 {
                    writeln!(
                        out,
                        "temp bytes:    {} (run `strata store gc`)",
                        du.temp_bytes
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { json } => {
            let report = store.verify()?;
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                for p in &report.problems {
                    writeln!(out, "DAMAGED {}: {}", p.path.display(), p.problem)?;
                }
                writeln!(
                    out,
                    "checked {} blobs, {} layers, {} images, {} kept blobs ({} bytes): {} problem(s)",
                    report.blobs_checked,
                    report.layers_checked,
                    report.images_checked,
                    report.kept_blobs_checked,
                    report.bytes_hashed,
                    report.problems.len()
                )?;
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Gc { json } => {
            let r = store.gc()?;
            if json {
                serde_json::to_writer_pretty(&mut out, &r)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "removed {} layers, {} blobs, {} temp files, {} digest entries; freed {} bytes; {} images kept",
                    r.layers_removed, r.blobs_removed, r.temp_removed, r.digests_removed, r.bytes_freed, r.images_kept
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
