//! `strata`: the user command line. Parsing lives in `launcher::cli`.

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`strata ps | head`) like other tools.
    launcher::sys::set_signal(
        nix::sys::signal::Signal::SIGPIPE,
        nix::sys::signal::SigHandler::SigDfl,
    );
    launcher::cli::main()
}
