//! `strata`: the user command line. Parsing lives in `launcher::cli`.

fn main() -> std::process::ExitCode {
    launcher::cli::main()
}
