//! Reporting a command line that does not parse, the same way in every binary.
//!
//! The contract (docs/CONTRACT.md) asks for one line on stderr and exit 64 for a startup
//! configuration error; clap's own output is several lines and exits 2.

use std::io::Write as _;

/// Exit code for bad flags or configuration: `EX_USAGE` from sysexits.h.
pub const EXIT_USAGE: u8 = 64;

/// Parses the process's arguments (and environment) into `C`, or reports and exits: `--help`
/// and `--version` print to stdout and exit 0; any error prints one line
/// `<name>: <what is wrong>` on stderr and exits [`EXIT_USAGE`].
pub fn parse_or_exit<C: clap::Parser>() -> C {
    match C::try_parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = report(&e, C::command().get_name());
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            std::process::exit(code);
        }
    }
}

/// Prints what `e` asks for (help text, version, or the one-line error) and returns the exit
/// code for it.
pub fn report(e: &clap::Error, name: &str) -> i32 {
    if e.use_stderr() {
        eprintln!("{}", one_line(e, name));
        i32::from(EXIT_USAGE)
    } else {
        let _ = e.print(); // --help, --version
        0
    }
}

/// The error as one line, `<name>: <first line of clap's message>`, without clap's `error: `
/// prefix, usage and hints.
pub fn one_line(e: &clap::Error, name: &str) -> String {
    let text = e.to_string();
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    format!("{name}: {}", line.trim_start_matches("error: "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    #[command(name = "demo")]
    struct Demo {
        #[arg(long, value_parser = crate::parse_duration)]
        wait: Option<std::time::Duration>,
    }

    #[test]
    fn errors_become_one_line_with_the_flag_and_the_reason() {
        let e = Demo::try_parse_from(["demo", "--wait", "soon"]).unwrap_err();
        assert!(e.use_stderr());
        let line = one_line(&e, "demo");
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("demo: invalid value 'soon' for '--wait"),
            "{line}"
        );
        assert!(line.contains("invalid duration \"soon\""), "{line}");
    }

    #[test]
    fn unknown_flags_are_one_line_too() {
        let e = Demo::try_parse_from(["demo", "--no-such-flag"]).unwrap_err();
        let line = one_line(&e, "demo");
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--no-such-flag"), "{line}");
    }

    #[test]
    fn help_is_not_an_error() {
        let e = Demo::try_parse_from(["demo", "--help"]).unwrap_err();
        assert!(!e.use_stderr());
    }
}
