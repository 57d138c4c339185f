//! `login-service`: parse the command line, run the command, exit with its code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Why: the contract wants configuration errors on one line and exit 64 (clap's default is
    // several lines and 2); --help/--version exit 0.
    login_service::cli::run(edge_process::parse_or_exit())
}
