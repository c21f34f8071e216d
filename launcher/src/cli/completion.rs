//! `strata completion SHELL` and `strata man`: shell completion scripts and
//! manual pages generated from the clap command definition, so they never
//! drift from the real flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

const COMPLETION_EXAMPLES: &str = "\
Examples:
  source <(strata completion bash)                  # this bash session
  strata completion bash > /etc/bash_completion.d/strata
  strata completion zsh > \"${fpath[1]}/_strata\"
  strata completion fish > ~/.config/fish/completions/strata.fish";

const MAN_EXAMPLES: &str = "\
Examples:
  strata man | man -l -                             # read strata(1) now
  strata man --dir /usr/local/share/man/man1        # strata.1, strata-pull.1, ...";

/// `strata completion` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = COMPLETION_EXAMPLES)]
pub struct CompletionArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `strata man` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = MAN_EXAMPLES)]
pub struct ManArgs {
    /// Write one page per command (strata.1, strata-pull.1, ...) into DIR
    /// instead of strata(1) to standard output.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Write the completion script for `args.shell` to standard output.
pub fn run_completion(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "strata", &mut out);
    out.flush().context("write completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// Write manual pages.
pub fn run_man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match args.dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("write manual page")?;
            out.flush().context("write manual page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("write manual pages into {}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completion_scripts_name_registry_commands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut buf);
            let text = String::from_utf8_lossy(&buf);
            for word in ["pull", "push", "login", "logout", "completion"] {
                assert!(text.contains(word), "{shell} script lacks {word}");
            }
        }
    }

    #[test]
    fn man_page_renders() {
        let mut buf = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut buf)
            .unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.starts_with(".ie") || text.contains(".TH strata"),
            "{text}"
        );
        assert!(text.contains("pull"));
    }
}
