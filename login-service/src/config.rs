//! Command line and environment (clap), and their validation into a [`Task`]: for `serve`, the
//! [`Settings`] the server runs with; for the other commands, the database they work on. Tests
//! build [`Settings`] directly. Nothing here touches the database or calls back into
//! [`crate::cli`], which runs the task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auth_token::cli::{KeyArgs, KeyArgsError};
use auth_token::{Issuer, Keyring};
use clap::{ArgAction, Args, Parser, Subcommand};
use edge_process::parse_duration;

use crate::db::{DbUrl, PoolSettings, UrlError};
use crate::lockout::{Policies, Policy};
use ipnet::IpNet;
use secrecy::SecretString;

/// `login-service`: issues access tokens for e-mail/password logins, and administers accounts.
#[derive(Debug, Parser)]
#[command(name = "login-service", version, about)]
pub struct Cli {
    /// Database and logging options, valid for every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options, for when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
}

/// `login-service user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is prompted for (twice) or read from stdin.
    Add {
        /// E-mail address (trimmed, lower-cased).
        email: String,
        /// Give the account the `admin` role.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (also clears a lockout).
    Passwd {
        /// E-mail address.
        email: String,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account: its logins fail like a wrong password.
    Disable {
        /// E-mail address.
        email: String,
    },
    /// Re-enable a disabled account.
    Enable {
        /// E-mail address.
        email: String,
    },
    /// Delete an account.
    Remove {
        /// E-mail address.
        email: String,
    },
    /// Revoke every token of the account issued until now ("sign out everywhere"); new logins
    /// work. passwd, disable and remove do this too.
    Revoke {
        /// E-mail address.
        email: String,
    },
    /// List accounts: id, email, admin, disabled, locked.
    List,
}

pub use edge_process::LogFormat;

/// Options shared by all subcommands.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// `mysql://user:pass@host:port/db`, `sqlite://PATH`, `sqlite:PATH` or a path; unset: DATA_DIR/login.sqlite.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Directory of the default SQLite database (created if missing).
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Maximum database connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 10, global = true)]
    pub db_pool_size: u32,
    /// How long to wait for a database connection before answering 503 (e.g. `3s`).
    #[arg(long, env = "DB_CONNECT_TIMEOUT", default_value = "3s", value_parser = parse_duration, global = true)]
    pub db_connect_timeout: Duration,
    /// How long a user-wide revocation (passwd, disable, remove, `user revoke`) is kept: at
    /// least the longest token lifetime (`serve` and the `user` commands use the larger of this
    /// and TOKEN_TTL).
    #[arg(long, env = "MAX_TOKEN_TTL", default_value = "24h", value_parser = parse_duration, global = true)]
    pub max_token_ttl: Duration,
    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTP listener.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:5000")]
    pub http_addr: SocketAddr,
    /// Apply pending migrations before serving.
    #[arg(long)]
    pub migrate: bool,
    /// Validate the configuration and keys, then exit 0 (no database access).
    #[arg(long)]
    pub check_config: bool,
    /// Signing keys (JWT_SECRET / KEYS_DIR / JWT_DEFAULT_KID).
    #[command(flatten)]
    pub keys: KeyArgs,
    /// kid of the key that signs tokens; default: the keyring's default key.
    #[arg(long, env = "JWT_SIGNING_KID")]
    pub signing_kid: Option<String>,
    /// Token lifetime: seconds or a duration like `24h`, `15m`.
    #[arg(long, env = "TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Base URL clients reach login-service through (e.g. `https://edge.example.com`): the
    /// `jwks_uri` of `/.well-known/openid-configuration` is PUBLIC_URL + `/.well-known/jwks.json`.
    /// Unset: the discovery document answers 404 (jwks.json is served regardless).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// `Cache-Control: max-age` of `/.well-known/jwks.json` and the discovery document; keep it
    /// shorter than the overlap of a key rotation.
    #[arg(long, env = "JWKS_MAX_AGE", default_value = "300s", value_parser = parse_duration)]
    pub jwks_max_age: Duration,
    /// `iss` claim written into tokens.
    #[arg(long, env = "JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim written into tokens.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Proxies (addresses or CIDRs, comma-separated) whose `x-envoy-external-address` header
    /// (the client address Envoy decided) is believed; from any other peer the TCP peer is the
    /// client. X-Forwarded-For is never read. Default: none (the
    /// service is reached directly). Behind Envoy: Envoy's address(es) only.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<IpNet>,
    /// Password hashes computed at once (default: number of CPUs).
    #[arg(long, env = "HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Longest a login may wait for a hashing permit (issue #15 §3); a login that would wait
    /// longer gets 503 `overloaded` with `Retry-After` at once, before any hashing or counting.
    /// Default: 1.5 × the measured time of one verification (2.5 × with one hashing permit):
    /// one round of waiting logins per permit (two with one permit). Must be below
    /// REQUEST_TIMEOUT. Per process.
    #[arg(long, env = "LOGIN_MAX_QUEUE_WAIT", value_parser = parse_duration)]
    pub login_max_queue_wait: Option<Duration>,
    /// Consecutive failures for one e-mail from one client address that lock that e-mail for
    /// that address (known and unknown e-mails alike).
    #[arg(long, env = "LOCKOUT_THRESHOLD", default_value_t = 5)]
    pub lockout_threshold: u32,
    /// Consecutive failures for one e-mail from all addresses together that lock it for every
    /// address (much higher than LOCKOUT_THRESHOLD, so one address cannot lock others out).
    #[arg(long, env = "ACCOUNT_LOCKOUT_THRESHOLD", default_value_t = 50)]
    pub account_lockout_threshold: u32,
    /// First lock length; doubles with every further failure.
    #[arg(long, env = "LOCKOUT_BASE", default_value = "30s", value_parser = parse_duration)]
    pub lockout_base: Duration,
    /// Longest account lock.
    #[arg(long, env = "LOCKOUT_MAX", default_value = "15m", value_parser = parse_duration)]
    pub lockout_max: Duration,
    /// Failures older than this (without a new one) are forgotten.
    #[arg(long, env = "LOCKOUT_RESET_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub lockout_reset_after: Duration,
    /// Failures from one client address before it is rate limited.
    #[arg(long, env = "IP_FAILURE_THRESHOLD", default_value_t = 20)]
    pub ip_failure_threshold: u32,
    /// First rate-limit length for an address; doubles with every further failure.
    #[arg(long, env = "IP_LOCKOUT_BASE", default_value = "60s", value_parser = parse_duration)]
    pub ip_lockout_base: Duration,
    /// Longest rate-limit for an address.
    #[arg(long, env = "IP_LOCKOUT_MAX", default_value = "15m", value_parser = parse_duration)]
    pub ip_lockout_max: Duration,
    /// Whole-request deadline.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest request body accepted (bytes).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 4096)]
    pub max_body_bytes: usize,
    /// Largest total size of request headers accepted (bytes).
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// When set, `GET /revocations` requires `Authorization: Bearer <this>` (ext-authz's
    /// `--revocation-feed-token`).
    #[arg(long, env = "REVOCATION_FEED_TOKEN", hide_env_values = true)]
    pub revocation_feed_token: Option<SecretString>,
    /// Serve `GET /revocations` without a token although the listener is not loopback-only
    /// (otherwise a missing REVOCATION_FEED_TOKEN stops the start).
    #[arg(long, env = "INSECURE_OPEN_FEED", action = ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_open_feed: bool,
    /// How often expired revocations are deleted from the database.
    #[arg(long, env = "REVOCATION_CLEANUP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub revocation_cleanup_interval: Duration,
    /// Unexpired per-token revocations (logouts) one user may hold; a logout beyond that ends
    /// every session of the user (one user-wide revocation) instead. Bounds what one account
    /// adds to every ext-authz's memory.
    #[arg(long, env = "MAX_REVOKED_PER_USER", default_value_t = DEFAULT_MAX_REVOKED_PER_USER)]
    pub max_revoked_per_user: u32,
    /// Most `GET /revocations` long polls waiting at once on this process (one per following
    /// ext-authz); more are answered 503 `feed_busy` with `Retry-After`. Bounds their memory.
    #[arg(long, env = "FEED_MAX_WAITERS", default_value_t = DEFAULT_FEED_MAX_WAITERS)]
    pub feed_max_waiters: usize,
    /// Most of those long polls from one client address (an IPv6 client by its /64); more are
    /// answered 503 `feed_busy` too. An ext-authz holds one at a time.
    #[arg(long, env = "FEED_MAX_WAITERS_PER_PEER", default_value_t = DEFAULT_FEED_MAX_WAITERS_PER_PEER)]
    pub feed_max_waiters_per_peer: usize,
    /// `on`: every JSON answer of `POST /login` carries a `refresh_token`. `off` (default): only
    /// a login with `?refresh=true` gets one. A text/plain answer is always the bare access token.
    #[arg(long, env = "REFRESH_TOKENS", action = ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub refresh_tokens: bool,
    /// Lifetime of an access token issued together with a refresh token (login with a refresh
    /// token, `POST /token`). Tokens without one keep TOKEN_TTL.
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// How long one refresh token can be used, from its issue (each rotation issues a new one).
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,
    /// Absolute lifetime of a session (a login and its refreshes): no refresh after it.
    #[arg(long, env = "SESSION_MAX_AGE", default_value = "90d", value_parser = parse_duration)]
    pub session_max_age: Duration,
    /// Refreshes one session allows; the next one is refused (log in again). Bounds its rows.
    #[arg(long, env = "REFRESH_MAX_ROTATIONS", default_value_t = crate::refresh::DEFAULT_MAX_ROTATIONS)]
    pub refresh_max_rotations: u32,
    /// Sessions (refresh-token families) one user keeps: a login beyond it ends the least
    /// recently refreshed one. Rows per user ≤ this × (REFRESH_MAX_ROTATIONS + 1).
    #[arg(long, env = "REFRESH_MAX_SESSIONS", default_value_t = crate::refresh::DEFAULT_MAX_SESSIONS)]
    pub refresh_max_sessions: u32,
}

/// A configuration the service refuses to start with (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Keys missing or unusable.
    #[error(transparent)]
    Keys(#[from] KeyArgsError),
    /// `--signing-kid` names no key, or there is no default key to sign with.
    #[error("signing key: {0}")]
    SigningKey(String),
    /// Bad `DATABASE_URL`.
    #[error(transparent)]
    DatabaseUrl(#[from] UrlError),
    /// A value out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Production settings (a non-loopback listener) without a revocation feed token.
    #[error(
        "REVOCATION_FEED_TOKEN is required when listening on {0} (not loopback): GET /revocations lists revoked users and token ids; set it (and ext-authz's --revocation-feed-token) or pass --insecure-open-feed"
    )]
    OpenFeed(SocketAddr),
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listener address.
    pub http_addr: SocketAddr,
    /// Database location.
    pub db_url: DbUrl,
    /// Pool sizing.
    pub pool: PoolSettings,
    /// Run migrations at startup.
    pub migrate: bool,
    /// Signing (and verifying) keys.
    pub keys: Arc<Keyring>,
    /// kid of the signing key; present in `keys`.
    pub signing_kid: String,
    /// TTL, `iss`, `aud`.
    pub issuer: Issuer,
    /// Lockout per e-mail, per e-mail and address, per address (all in the database).
    pub lockout: Policies,
    /// Peers whose `x-envoy-external-address` is believed (empty: the TCP peer is the client).
    pub trusted_proxies: Vec<IpNet>,
    /// Concurrent password hashes.
    pub hash_concurrency: usize,
    /// Longest wait for a hashing permit before a 503 (`None`: 1.5 × one verification, 2.5 ×
    /// with one permit).
    pub max_queue_wait: Option<Duration>,
    /// Argon2 parameters for new hashes (OWASP in production).
    pub hash_params: argon2::Params,
    /// Request deadline.
    pub request_timeout: Duration,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Header limit.
    pub max_header_bytes: usize,
    /// Drain deadline.
    pub shutdown_timeout: Duration,
    /// `/logout`, the revocation feed and its cleanup.
    pub revocation: RevocationSettings,
    /// `/.well-known/jwks.json` and `/.well-known/openid-configuration`.
    pub well_known: WellKnownSettings,
    /// Refresh tokens and `POST /token` (issue #17).
    pub refresh: RefreshSettings,
}

/// Refresh tokens: when `POST /login` issues one, the access tokens that come with them, and
/// the families' lifetimes.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// `REFRESH_TOKENS=on`: every JSON login answer carries a refresh token.
    pub always: bool,
    /// Issues the access tokens that come with a refresh token: TTL `ACCESS_TOKEN_TTL`, the
    /// same `iss`/`aud` as [`Settings::issuer`].
    pub issuer: Issuer,
    /// `REFRESH_TOKEN_TTL`, `SESSION_MAX_AGE`, `REFRESH_MAX_ROTATIONS`.
    pub lifetimes: crate::refresh::Lifetimes,
}

impl RefreshSettings {
    /// Defaults (refresh tokens on request, 15 min access tokens) with `iss`/`aud` of `issuer`.
    pub fn defaults_for(issuer: &Issuer) -> Self {
        Self {
            always: false,
            issuer: Issuer {
                ttl: DEFAULT_ACCESS_TOKEN_TTL,
                ..issuer.clone()
            },
            lifetimes: crate::refresh::Lifetimes::default(),
        }
    }
}

/// Default `ACCESS_TOKEN_TTL`.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// What the `/.well-known` endpoints publish beyond the keys.
#[derive(Debug, Clone)]
pub struct WellKnownSettings {
    /// `PUBLIC_URL` without a trailing slash; `None`: no discovery document.
    pub public_url: Option<String>,
    /// `Cache-Control: public, max-age` of both documents.
    pub max_age: Duration,
}

impl Default for WellKnownSettings {
    fn default() -> Self {
        Self {
            public_url: None,
            max_age: Duration::from_secs(300),
        }
    }
}

/// What the command line asks for, validated: everything [`crate::cli::run`] needs to run it.
#[derive(Debug)]
pub enum Task {
    /// `serve` (also without a subcommand).
    Serve(Box<Settings>),
    /// `serve --check-config`: the configuration and keys are valid; nothing more to do.
    CheckConfig(Box<Settings>),
    /// `migrate`.
    Migrate(Database),
    /// `user …`.
    User {
        /// The accounts' database.
        db: Database,
        /// How long the user-wide revocations of `passwd`, `disable`, `remove` and `revoke`
        /// are kept ([`user_revocation_ttl`], the rule `serve` uses too).
        revocation_ttl: Duration,
        /// The command.
        command: UserCommand,
    },
}

/// A database to open: where, and the pool around it.
#[derive(Debug, Clone)]
pub struct Database {
    /// Location and backend.
    pub url: DbUrl,
    /// Pool sizing.
    pub pool: PoolSettings,
}

impl Cli {
    /// Validates the command line into the [`Task`] to run: loads the keys for `serve`, never
    /// touches the database.
    pub fn task(self) -> Result<Task, ConfigError> {
        let global = &self.global;
        let database = || global.db().map(|(url, pool)| Database { url, pool });
        Ok(match self.command {
            None => self.serve.serve_task(global)?,
            Some(Command::Serve(args)) => args.serve_task(global)?,
            Some(Command::Migrate) => Task::Migrate(database()?),
            // Why the server's TOKEN_TTL (read from the same environment): user-wide
            // revocations must outlive the tokens it issues.
            Some(Command::User(command)) => Task::User {
                db: database()?,
                revocation_ttl: user_revocation_ttl(
                    global.max_token_ttl,
                    self.serve.token_ttl.max(self.serve.access_token_ttl),
                ),
                command,
            },
        })
    }
}

impl ServeArgs {
    /// `serve`, or `serve --check-config`.
    fn serve_task(&self, global: &GlobalArgs) -> Result<Task, ConfigError> {
        let settings = Box::new(self.resolve(global)?);
        Ok(if self.check_config {
            Task::CheckConfig(settings)
        } else {
            Task::Serve(settings)
        })
    }
}

/// Revocation settings of `serve` (the CLI only needs [`RevocationSettings::user_ttl`]).
#[derive(Debug, Clone)]
pub struct RevocationSettings {
    /// When set, `GET /revocations` requires `Authorization: Bearer <token>`.
    pub feed_token: Option<SecretString>,
    /// How long a user-wide revocation is kept: at least the longest token lifetime.
    pub user_ttl: Duration,
    /// How often expired rows are deleted.
    pub cleanup_interval: Duration,
    /// Unexpired per-token revocations one user may hold; a logout beyond it revokes all the
    /// user's tokens instead (bounds what one account adds to every ext-authz).
    pub max_revoked_per_user: u32,
    /// Most long polls of the feed waiting at once (`FEED_MAX_WAITERS`).
    pub feed_max_waiters: usize,
    /// Most of them from one client address (`FEED_MAX_WAITERS_PER_PEER`).
    pub feed_max_waiters_per_peer: usize,
}

/// Default of [`RevocationSettings::max_revoked_per_user`] (`MAX_REVOKED_PER_USER`).
pub const DEFAULT_MAX_REVOKED_PER_USER: u32 = 16;
/// Default of [`RevocationSettings::feed_max_waiters`] (`FEED_MAX_WAITERS`): four times the
/// 500 gateways of issue #15. Sized from memory (review F3): at the ≈ 30 KiB each measured in
/// BENCHMARKS.md, ≈ 60 MiB at most, inside the 256 MiB the manifests give login-service next to
/// its argon2 hashes (10,000 would have been ≈ 300 MiB).
pub const DEFAULT_FEED_MAX_WAITERS: usize = 2_000;
/// Default of [`RevocationSettings::feed_max_waiters_per_peer`] (`FEED_MAX_WAITERS_PER_PEER`):
/// room for several ext-authz behind one address (a node's SNAT), far from the global bound.
pub const DEFAULT_FEED_MAX_WAITERS_PER_PEER: usize = 16;

impl Default for RevocationSettings {
    fn default() -> Self {
        Self {
            feed_token: None,
            user_ttl: Duration::from_secs(86_400),
            cleanup_interval: Duration::from_secs(60),
            max_revoked_per_user: DEFAULT_MAX_REVOKED_PER_USER,
            feed_max_waiters: DEFAULT_FEED_MAX_WAITERS,
            feed_max_waiters_per_peer: DEFAULT_FEED_MAX_WAITERS_PER_PEER,
        }
    }
}

/// How long a user-wide revocation is kept: the longest lifetime a token can have, i.e. the
/// larger of `MAX_TOKEN_TTL` and `TOKEN_TTL` (callers pass the larger of `TOKEN_TTL` and
/// `ACCESS_TOKEN_TTL` as `token_ttl`). `serve` and the admin CLI both use this one rule,
/// so a revocation never expires before a token it revokes.
pub fn user_revocation_ttl(max_token_ttl: Duration, token_ttl: Duration) -> Duration {
    max_token_ttl.max(token_ttl)
}

impl GlobalArgs {
    /// The database location and pool settings.
    pub fn db(&self) -> Result<(DbUrl, PoolSettings), ConfigError> {
        let url = DbUrl::parse(self.database_url.as_deref(), &self.data_dir)?;
        if self.db_pool_size == 0 {
            return Err(ConfigError::Invalid("--db-pool-size must be ≥ 1".into()));
        }
        Ok((
            url,
            PoolSettings {
                max_size: self.db_pool_size,
                connection_timeout: self.db_connect_timeout.max(Duration::from_millis(100)),
            },
        ))
    }
}

/// The key that signs: `--signing-kid` or the keyring's default. It must be able to sign: an
/// HMAC secret (HS256) or an Ed25519 private key `KID.pem` (EdDSA), never a `KID.pub.pem`.
pub fn signing_kid(keys: &Keyring, wanted: Option<&str>) -> Result<String, ConfigError> {
    let kid = signing_kid_named(keys, wanted)?;
    keys.signing_key(Some(&kid))
        .map_err(|e| ConfigError::SigningKey(e.to_string()))?;
    Ok(kid)
}

fn signing_kid_named(keys: &Keyring, wanted: Option<&str>) -> Result<String, ConfigError> {
    match wanted {
        Some(kid) if keys.get(Some(kid)).is_some() => Ok(kid.to_owned()),
        Some(kid) => Err(ConfigError::SigningKey(format!(
            "JWT_SIGNING_KID {kid:?} is not in the keyring (have: {})",
            keys.kids().join(", ")
        ))),
        None => keys.default_kid().map(str::to_owned).ok_or_else(|| {
            ConfigError::SigningKey(
                "no default key: set JWT_SIGNING_KID or JWT_DEFAULT_KID".to_owned(),
            )
        }),
    }
}

impl ServeArgs {
    /// Validates and resolves into [`Settings`] (loads the keys; does not touch the database).
    pub fn resolve(&self, global: &GlobalArgs) -> Result<Settings, ConfigError> {
        let (db_url, pool) = global.db()?;
        let keys = self.keys.load()?;
        let signing_kid = signing_kid(&keys, self.signing_kid.as_deref())?;
        if self.token_ttl.as_secs() == 0 {
            return Err(ConfigError::Invalid(
                "--token-ttl must be at least 1s".into(),
            ));
        }
        for (name, d) in [
            ("--access-token-ttl", self.access_token_ttl),
            ("--refresh-token-ttl", self.refresh_token_ttl),
            ("--session-max-age", self.session_max_age),
        ] {
            if d.as_secs() == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1s")));
            }
        }
        if self.refresh_max_rotations == 0 {
            return Err(ConfigError::Invalid(
                "--refresh-max-rotations must be ≥ 1".into(),
            ));
        }
        if self.refresh_max_sessions == 0 {
            return Err(ConfigError::Invalid(
                "--refresh-max-sessions must be ≥ 1".into(),
            ));
        }
        if self.lockout_threshold == 0
            || self.ip_failure_threshold == 0
            || self.account_lockout_threshold == 0
        {
            return Err(ConfigError::Invalid(
                "lockout thresholds must be ≥ 1".into(),
            ));
        }
        if self.lockout_max > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::Invalid(
                "--lockout-max must be ≤ 30 days".into(),
            ));
        }
        // Why: a secret file's trailing newline goes verbatim into the env; the rule (trim,
        // refuse tokens that are short or would never match) is ext-authz's, in auth-token.
        let feed_token = auth_token::feed_token(self.revocation_feed_token.as_ref())
            .map_err(|e| ConfigError::Invalid(format!("REVOCATION_FEED_TOKEN must be {e}")))?;
        // Why: the feed lists subjects and token ids; "production" = reachable beyond this host.
        if feed_token.is_none() && !self.http_addr.ip().is_loopback() && !self.insecure_open_feed {
            return Err(ConfigError::OpenFeed(self.http_addr));
        }
        let public_url = match self.public_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(url) => {
                return Err(ConfigError::Invalid(format!(
                    "PUBLIC_URL {url:?} must start with https:// (or http://)"
                )));
            }
        };
        if self
            .login_max_queue_wait
            .is_some_and(|w| w >= self.request_timeout)
        {
            return Err(ConfigError::Invalid(
                "--login-max-queue-wait must be below --request-timeout".into(),
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let issuer = Issuer {
            ttl: self.token_ttl,
            issuer: self.issuer.clone().filter(|s| !s.is_empty()),
            audience: self.audience.clone().filter(|s| !s.is_empty()),
        };
        let longest_ttl = self.token_ttl.max(self.access_token_ttl);
        Ok(Settings {
            refresh: RefreshSettings {
                always: self.refresh_tokens,
                issuer: Issuer {
                    ttl: self.access_token_ttl,
                    ..issuer.clone()
                },
                lifetimes: crate::refresh::Lifetimes {
                    refresh_ttl: self.refresh_token_ttl,
                    session_max_age: self.session_max_age,
                    max_rotations: self.refresh_max_rotations,
                    max_sessions: self.refresh_max_sessions,
                },
            },
            http_addr: self.http_addr,
            db_url,
            pool,
            migrate: self.migrate,
            keys: Arc::new(keys),
            signing_kid,
            issuer,
            lockout: Policies {
                account: Policy {
                    threshold: self.account_lockout_threshold,
                    base: self.lockout_base,
                    max: self.lockout_max,
                    reset_after: self.lockout_reset_after,
                },
                account_source: Policy {
                    threshold: self.lockout_threshold,
                    base: self.lockout_base,
                    max: self.lockout_max,
                    reset_after: self.lockout_reset_after,
                },
                source: Policy {
                    threshold: self.ip_failure_threshold,
                    base: self.ip_lockout_base,
                    max: self.ip_lockout_max,
                    reset_after: self.lockout_reset_after,
                },
            },
            trusted_proxies: self.trusted_proxies.clone(),
            hash_concurrency: self.hash_concurrency.unwrap_or(cores).max(1),
            max_queue_wait: self.login_max_queue_wait,
            hash_params: crate::password::owasp_params(),
            request_timeout: self.request_timeout,
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            shutdown_timeout: self.shutdown_timeout,
            revocation: RevocationSettings {
                feed_token,
                user_ttl: user_revocation_ttl(global.max_token_ttl, longest_ttl),
                cleanup_interval: self.revocation_cleanup_interval,
                max_revoked_per_user: self.max_revoked_per_user,
                feed_max_waiters: self.feed_max_waiters.max(1),
                feed_max_waiters_per_peer: self.feed_max_waiters_per_peer.max(1),
            },
            well_known: WellKnownSettings {
                public_url,
                max_age: self.jwks_max_age,
            },
        })
    }
}

/// Parses one `TRUSTED_PROXIES` entry: an address (`127.0.0.1`, `::1`) or a CIDR
/// (`10.0.0.0/8`).
pub fn parse_proxy(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if s.contains('/') {
        s.parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|_| format!("{s:?} is not an address or CIDR (e.g. 10.0.0.0/8, 127.0.0.1)"))
    } else {
        s.parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an address or CIDR (e.g. 10.0.0.0/8, 127.0.0.1)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use secrecy::ExposeSecret as _;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn trusted_proxies_parse() {
        let cli = Cli::try_parse_from([
            "login-service",
            "--jwt-secret",
            &"k".repeat(32),
            "--trusted-proxies",
            "127.0.0.1, 10.1.2.3/8,::1",
        ])
        .unwrap();
        let p: Vec<String> = cli
            .serve
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(p, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        assert!(parse_proxy("nonsense").is_err());
        assert!(parse_proxy("10.0.0.0/33").is_err());
    }

    #[test]
    fn signing_kid_rules() {
        let ring = Keyring::single("default", &[7u8; 32]).unwrap();
        assert_eq!(signing_kid(&ring, None).unwrap(), "default");
        assert_eq!(signing_kid(&ring, Some("default")).unwrap(), "default");
        assert!(signing_kid(&ring, Some("other")).is_err());
    }

    /// A public key (`KID.pub.pem`) can verify but never sign: refused at startup.
    #[test]
    fn public_key_cannot_be_the_signing_key() {
        let (private, public) = auth_token::testing::ed25519_pem_pair();
        let ring = Keyring::from_keys(
            vec![
                auth_token::Key::ed25519_private_pem("ed", private.as_bytes()).unwrap(),
                auth_token::Key::public_pem("pub", public.as_bytes()).unwrap(),
            ],
            Some("pub"),
        )
        .unwrap();
        assert_eq!(signing_kid(&ring, Some("ed")).unwrap(), "ed");
        let err = signing_kid(&ring, None).unwrap_err().to_string();
        assert!(err.contains("\"pub\" is a public key"), "{err}");
        assert!(signing_kid(&ring, Some("pub")).is_err());
    }

    #[test]
    fn no_subcommand_means_serve_with_defaults() {
        let cli = Cli::try_parse_from([
            "login-service",
            "--jwt-secret",
            &"k".repeat(32),
            "--revocation-feed-token",
            &"f".repeat(64),
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.http_addr.port(), 5000);
        assert!(cli.serve.trusted_proxies.is_empty());
        let s = cli.serve.resolve(&cli.global).unwrap();
        assert_eq!(s.issuer.ttl, Duration::from_secs(86_400));
    }

    /// Issue #11 item 10: a listener reachable beyond this host (the default 0.0.0.0) without
    /// REVOCATION_FEED_TOKEN would publish the feed to anyone; refused unless opted out.
    #[test]
    fn non_loopback_listener_requires_a_feed_token() {
        let resolve = |args: &[&str]| {
            let secret = "k".repeat(32);
            let argv = ["login-service", "--jwt-secret", secret.as_str()];
            let cli = Cli::try_parse_from(argv.iter().chain(args)).unwrap();
            cli.serve.resolve(&cli.global)
        };
        for refused in [
            &[][..],
            &["--http-addr", "10.1.2.3:5000"],
            &["--http-addr", "[::]:5000"],
            &["--revocation-feed-token", ""],
        ] {
            let err = resolve(refused).unwrap_err();
            assert!(matches!(err, ConfigError::OpenFeed(_)), "{refused:?}");
            let line = err.to_string();
            assert_eq!(line.lines().count(), 1);
            assert!(
                line.starts_with("REVOCATION_FEED_TOKEN is required when listening on "),
                "{line}"
            );
            assert!(line.contains("--insecure-open-feed"), "{line}");
        }
        let token = "0123456789abcdef".repeat(4);
        let spaced = format!("  {token}\n");
        for allowed in [
            &["--revocation-feed-token", token.as_str()][..],
            &["--revocation-feed-token", spaced.as_str()],
            &["--http-addr", "127.0.0.1:5000"],
            &["--http-addr", "[::1]:5000"],
            &["--insecure-open-feed"],
        ] {
            resolve(allowed).unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
        }
        let s = resolve(&["--revocation-feed-token", spaced.as_str()]).unwrap();
        let kept = s.revocation.feed_token.unwrap();
        assert_eq!(
            kept.expose_secret(),
            token,
            "trimmed: ext-authz sends it so"
        );
    }

    /// Security review of issue #11: a short token, or one with whitespace or control
    /// characters inside, never matches what ext-authz sends; refused without printing it.
    #[test]
    fn feed_token_is_validated() {
        let secret = "k".repeat(32);
        let token = "0123456789abcdef".repeat(4);
        for bad in [
            "t".to_owned(),
            "x".repeat(31),
            format!("{}\n{}", &token[..32], &token[32..]),
            format!("{} {}", &token[..32], &token[32..]),
            format!("{token}\u{1}"),
        ] {
            let argv = ["login-service", "--jwt-secret", &secret];
            let cli =
                Cli::try_parse_from(argv.into_iter().chain(["--revocation-feed-token", &bad]))
                    .unwrap();
            let err = cli.serve.resolve(&cli.global).unwrap_err();
            assert_eq!(
                err.to_string(),
                "invalid setting: REVOCATION_FEED_TOKEN must be at least 32 characters of A-Z a-z 0-9 - . _ ~ + / with optional trailing = (an RFC 6750 b64token; surrounding whitespace is trimmed)",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn user_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "login-service",
            "user",
            "add",
            "a@b.c",
            "--admin",
            "--password-stdin",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::User(UserCommand::Add {
                admin: true,
                password_stdin: true,
                ..
            }))
        ));
    }
}
