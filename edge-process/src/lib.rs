//! Process plumbing shared by the edge binaries (ext-authz, login-service): how a duration flag
//! is spelled, where and in which shape logs go, which signals stop a server, and how a command
//! line that does not parse is reported.
//!
//! Why a crate of its own: each binary had its own copy and they drifted (two duration grammars
//! for the same `SHUTDOWN_TIMEOUT`, logs on stdout in one and stderr in the other). It sits at
//! the bottom of the stack: it depends on neither `auth-token` nor a service, and does no I/O
//! until a binary calls it.

pub mod cli;
pub mod duration;
pub mod signal;
pub mod telemetry;

pub use cli::{EXIT_USAGE, parse_or_exit};
pub use duration::{DurationError, parse_duration};
pub use signal::shutdown_signal;
pub use telemetry::LogFormat;
