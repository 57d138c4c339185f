//! `login-service`: parse the command line, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    match login_service::config::Cli::try_parse() {
        Ok(cli) => login_service::cli::run(cli),
        Err(e) => {
            // Why: the contract wants configuration errors to exit 64 (clap's default is 2).
            let code = if e.use_stderr() {
                login_service::cli::EX_USAGE
            } else {
                0
            };
            let _ = e.print();
            ExitCode::from(code)
        }
    }
}
