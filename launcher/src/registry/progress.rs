//! Progress output for pulls and pushes: one bar per blob on a terminal,
//! one line per finished blob otherwise, nothing with `--quiet`.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Digest;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars on stderr (a terminal).
    Bars,
    /// Plain lines on stderr (not a terminal).
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines otherwise, nothing when `quiet`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// The progress display of one pull or push.
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
}

/// One blob's bar (or line).
pub struct BlobProgress {
    mode: Mode,
    multi: MultiProgress,
    bar: ProgressBar,
    label: String,
}

/// The first 12 hex digits, as docker and podman show blob ids.
pub fn short(digest: &Digest) -> &str {
    &digest.hex()[..12]
}

impl Progress {
    /// A display in `mode`.
    pub fn new(mode: Mode) -> Progress {
        let target = match mode {
            Mode::Bars => ProgressDrawTarget::stderr(),
            Mode::Lines | Mode::Quiet => ProgressDrawTarget::hidden(),
        };
        Progress {
            mode,
            multi: MultiProgress::with_draw_target(target),
        }
    }

    /// Print a message line (not in quiet mode).
    pub fn message(&self, text: &str) {
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(text);
            }
            Mode::Lines => eprintln!("{text}"),
            Mode::Quiet => {}
        }
    }

    /// Start a bar for a blob of `size_bytes` (0 if unknown).
    pub fn blob(&self, verb: &str, digest: &Digest, size_bytes: u64) -> BlobProgress {
        let label = format!("{verb} blob {}", short(digest));
        let bar = if self.mode == Mode::Bars {
            let bar = self.multi.add(ProgressBar::new(size_bytes));
            // The template is a constant known to be valid.
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.clone());
            bar
        } else {
            ProgressBar::hidden()
        };
        BlobProgress {
            mode: self.mode,
            multi: self.multi.clone(),
            bar,
            label,
        }
    }
}

impl BlobProgress {
    /// The bar, to wrap a reader or writer with.
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Restart after a failed attempt.
    pub fn reset(&self) {
        self.bar.set_position(0);
    }

    /// Mark done with a word ("done", "skipped: already exists").
    pub fn finish(&self, outcome: &str) {
        match self.mode {
            // The finished line is printed above the live bars, so it stays
            // on screen however the bars below are redrawn.
            Mode::Bars => {
                self.bar.finish_and_clear();
                let _ = self.multi.println(format!("{} {outcome}", self.label));
            }
            Mode::Lines => eprintln!("{} {outcome}", self.label),
            Mode::Quiet => {}
        }
    }

    /// Mark failed.
    pub fn abandon(&self) {
        if self.mode == Mode::Bars {
            self.bar.finish_and_clear();
            let _ = self.multi.println(format!("{} failed", self.label));
        }
    }
}
