//! The process entry and the top of the module stack: the parsed command line is validated
//! into a [`Task`] by [`crate::config`], then run here by calling down — [`crate::server`] for
//! `serve`, [`crate::db`] for `migrate`, [`crate::users`] and [`crate::revocations`] for the
//! `user` admin commands. Nothing below calls back up.
//!
//! Exit codes (sysexits.h): 0 ok, 64 usage/configuration, 65 invalid input (e-mail, empty or
//! mismatched password), 67 unknown user, 69 database unavailable, 70 internal error,
//! 73 duplicate e-mail.

use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use crate::config::{Cli, ConfigError, Database, Settings, Task, UserCommand};
use crate::db::{Db, DbError};
use crate::password;
use crate::refresh;
use crate::revocations::{self, Reason};
use crate::users::{self, EmailError};

/// sysexits `EX_USAGE`: bad flags or configuration.
pub const EX_USAGE: u8 = edge_process::EXIT_USAGE;
/// sysexits `EX_DATAERR`: invalid e-mail or password.
pub const EX_DATAERR: u8 = 65;
/// sysexits `EX_NOUSER`: no account with that e-mail.
pub const EX_NOUSER: u8 = 67;
/// sysexits `EX_UNAVAILABLE`: the database cannot be reached.
pub const EX_UNAVAILABLE: u8 = 69;
/// sysexits `EX_SOFTWARE`: internal error.
pub const EX_SOFTWARE: u8 = 70;
/// sysexits `EX_CANTCREAT`: an account with that e-mail exists.
pub const EX_CANTCREAT: u8 = 73;

/// Longest password accepted by the CLI (bytes).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A failed command: message for stderr and exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad configuration or usage.
    #[error("{0}")]
    Usage(String),
    /// Invalid e-mail or password.
    #[error("{0}")]
    Invalid(String),
    /// No such account.
    #[error("no user with e-mail {0}")]
    NoUser(String),
    /// Duplicate account.
    #[error("a user with e-mail {0} already exists")]
    Duplicate(String),
    /// Database unreachable or failing.
    #[error("database error: {0}")]
    Database(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EX_USAGE,
            Self::Invalid(_) => EX_DATAERR,
            Self::NoUser(_) => EX_NOUSER,
            Self::Duplicate(_) => EX_CANTCREAT,
            Self::Database(_) => EX_UNAVAILABLE,
            Self::Internal(_) => EX_SOFTWARE,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::Usage(e.to_string())
    }
}

impl From<DbError> for CliError {
    fn from(e: DbError) -> Self {
        Self::Database(format!(
            "{e} (is the database up, and migrated with `login-service migrate`?)"
        ))
    }
}

impl From<EmailError> for CliError {
    fn from(e: EmailError) -> Self {
        Self::Invalid(format!("invalid e-mail: {e}"))
    }
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    edge_process::telemetry::init(cli.global.log_format, "login-service");
    let result = cli.task().map_err(CliError::from).and_then(execute);
    edge_process::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("login-service: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn execute(task: Task) -> Result<(), CliError> {
    match task {
        Task::CheckConfig(settings) => {
            eprintln!(
                "login-service: configuration ok (backend {}, signing kid {}, {} key(s))",
                settings.db_url.backend(),
                settings.signing_kid,
                settings.keys.len()
            );
            Ok(())
        }
        Task::Serve(settings) => serve(*settings),
        Task::Migrate(db) => migrate(&db),
        Task::User {
            db,
            revocation_ttl,
            command,
        } => user(&db, revocation_ttl, command),
    }
}

fn serve(settings: Settings) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Internal(format!("cannot start runtime: {e}")))?;
    rt.block_on(crate::server::run(settings)).map_err(|e| {
        if e.downcast_ref::<DbError>().is_some() {
            CliError::Database(format!("{e:#}"))
        } else if e.downcast_ref::<std::io::Error>().is_some() {
            CliError::Usage(format!("{e:#}"))
        } else {
            CliError::Internal(format!("{e:#}"))
        }
    })
}

fn open(database: &Database) -> Result<Db, CliError> {
    Db::new(database.url.clone(), &database.pool)
        .map_err(|e| CliError::Usage(format!("cannot create data directory: {e}")))
}

fn migrate(database: &Database) -> Result<(), CliError> {
    let db = open(database)?;
    let applied = db.migrate()?;
    if applied.is_empty() {
        eprintln!("login-service: database is up to date");
    }
    for m in applied {
        eprintln!("login-service: applied {m}");
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> Result<SecretString, CliError> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Invalid(format!("cannot read password from stdin: {e}")))?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        SecretString::from(trimmed.to_owned())
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "stdin is not a terminal: pass --password-stdin to read the password from it"
                    .into(),
            ));
        }
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| CliError::Invalid(format!("cannot read password: {e}")))?;
        let second = rpassword::prompt_password("Repeat password: ")
            .map_err(|e| CliError::Invalid(format!("cannot read password: {e}")))?;
        if first != second {
            return Err(CliError::Invalid("passwords do not match".into()));
        }
        SecretString::from(first)
    };
    if pw.expose_secret().is_empty() {
        return Err(CliError::Invalid("password is empty".into()));
    }
    if pw.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(CliError::Invalid(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(pw)
}

fn hash(pw: &SecretString) -> Result<String, CliError> {
    password::hash_with(pw.expose_secret().as_bytes(), password::owasp_params())
        .map_err(|e| CliError::Internal(e.to_string()))
}

fn is_unique_violation(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _
        ))
    )
}

/// `ttl` is how long the user-wide revocations are kept ([`Task::User`]).
fn user(database: &Database, ttl: Duration, cmd: UserCommand) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add {
            email,
            admin,
            password_stdin,
        } => {
            let email = users::normalize_email(&email)?;
            let pw = read_password(password_stdin)?;
            let db = open(database)?;
            let h = hash(&pw)?;
            let e2 = email.clone();
            match db.run_sync(move |c| users::insert(c, &e2, &h, admin)) {
                Ok(()) => {
                    eprintln!(
                        "login-service: user {email} added{}",
                        if admin { " (admin)" } else { "" }
                    );
                    Ok(())
                }
                Err(e) if is_unique_violation(&e) => Err(CliError::Duplicate(email)),
                Err(e) => Err(e.into()),
            }
        }
        UserCommand::Passwd {
            email,
            password_stdin,
        } => {
            // Look up first, so an unknown user is reported before asking for a password.
            let (db, email, found) = existing_user(database, &email)?;
            let id = found.id;
            let pw = read_password(password_stdin)?;
            let h = hash(&pw)?;
            let e2 = email.clone();
            expect_one(
                db.run_sync(move |c| users::set_password(c, &e2, &h))?,
                &email,
            )?;
            eprintln!("login-service: password of {email} changed");
            revoke_all(&db, ttl, &email, id, Reason::Password)
        }
        UserCommand::Disable { email } => set_disabled(database, ttl, &email, true),
        UserCommand::Enable { email } => set_disabled(database, ttl, &email, false),
        UserCommand::Remove { email } => {
            let (db, email, found) = existing_user(database, &email)?;
            let e2 = email.clone();
            expect_one(db.run_sync(move |c| users::remove(c, &e2))?, &email)?;
            eprintln!("login-service: user {email} removed");
            revoke_all(&db, ttl, &email, found.id, Reason::Removed)
        }
        UserCommand::Revoke { email } => {
            let (db, email, found) = existing_user(database, &email)?;
            revoke_all(&db, ttl, &email, found.id, Reason::Admin)
        }
        UserCommand::List => {
            let db = open(database)?;
            let all = db.run_sync(users::list)?;
            let now = chrono::Utc::now().naive_utc();
            let width = all.iter().map(|u| u.email.len()).max().unwrap_or(5).max(5);
            println!(
                "{:>6}  {:<width$}  {:<5}  {:<8}  {:<6}",
                "id", "email", "admin", "disabled", "locked"
            );
            for u in &all {
                println!(
                    "{:>6}  {:<width$}  {:<5}  {:<8}  {:<6}",
                    u.id,
                    u.email,
                    yes_no(u.is_admin),
                    yes_no(u.disabled),
                    yes_no(u.locked_at(now)),
                );
            }
            Ok(())
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn expect_one(rows: usize, email: &str) -> Result<(), CliError> {
    if rows == 0 {
        Err(CliError::NoUser(email.to_owned()))
    } else {
        Ok(())
    }
}

/// The database, the normalised e-mail and its account; `NoUser` (exit 67) when there is none.
fn existing_user(database: &Database, email: &str) -> Result<(Db, String, users::User), CliError> {
    let email = users::normalize_email(email)?;
    let db = open(database)?;
    let e2 = email.clone();
    match db.run_sync(move |c| users::find_by_email(c, &e2))? {
        Some(found) => Ok((db, email, found)),
        None => Err(CliError::NoUser(email)),
    }
}

fn set_disabled(
    database: &Database,
    ttl: Duration,
    email: &str,
    disabled: bool,
) -> Result<(), CliError> {
    // Look up first: an unknown user is exit 67, and the id is needed for the revocation.
    let (db, email, found) = existing_user(database, email)?;
    let e2 = email.clone();
    db.run_sync(move |c| users::set_disabled(c, &e2, disabled))?;
    eprintln!(
        "login-service: user {email} {}",
        if disabled { "disabled" } else { "enabled" }
    );
    if disabled {
        revoke_all(&db, ttl, &email, found.id, Reason::Disabled)
    } else {
        Ok(())
    }
}

/// Revokes every token of user `id` issued until now. Runs after the account change, so a
/// login racing the change cannot slip a token past the revocation.
/// `ttl` is [`crate::config::user_revocation_ttl`], the rule `serve` uses too.
fn revoke_all(
    db: &Db,
    ttl: Duration,
    email: &str,
    id: i32,
    reason: Reason,
) -> Result<(), CliError> {
    // Why the families after the cut: a login or refresh in flight either sees the cut, or
    // stored its refresh row before this update reaches it (crate::refresh, "Races").
    db.run_sync(move |c| {
        revocations::revoke_user(c, &id.to_string(), revocations::now_secs, ttl, reason)?;
        refresh::end_user(c, id, revocations::now_secs()).map(|_| ())
    })
    .map_err(|e| {
        CliError::Database(format!(
            "{e}: the tokens of {email} were NOT revoked; retry with `login-service user revoke`"
        ))
    })?;
    eprintln!("login-service: tokens of {email} issued until now revoked");
    Ok(())
}
