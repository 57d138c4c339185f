//! Command-line and environment configuration (clap derive; every flag has an env var).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use auth_token::cli::KeyArgs;
use auth_token::{Keyring, VerifierConfig};

use crate::feed::FeedConfig;
use crate::issuers::{self, IssuerSettings};
use crate::jwks_fetch::{FetchLimits, RefreshConfig};
use crate::jwks_refresh::RefreshBounds;

/// Most `--jwks-url`s (each has a refresh task and a keyring in memory).
pub const MAX_JWKS_URLS: usize = 8;

/// Exit code for configuration errors (`EX_USAGE` from sysexits.h), as CONTRACT.md requires.
pub const EXIT_CONFIG: u8 = edge_process::EXIT_USAGE;

pub use edge_process::LogFormat;
use edge_process::parse_duration;

/// Everything ext-authz can be told at startup.
///
/// Tests build it with [`clap::Parser::try_parse_from`] instead of touching the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ext-authz",
    version,
    about = "Envoy ext_authz gRPC service validating HS256 JWTs",
    long_about = None
)]
pub struct Config {
    /// TCP address of the gRPC server (Authorization + grpc.health.v1).
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:9001")]
    pub grpc_addr: SocketAddr,
    /// Also serve gRPC on this Unix domain socket (mode 0660; a stale socket file is replaced).
    #[arg(long, env = "GRPC_UDS")]
    pub grpc_uds: Option<PathBuf>,
    /// Address of the Prometheus metrics HTTP server (path `/metrics`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9002")]
    pub metrics_addr: SocketAddr,
    /// Signing keys (JWT_SECRET or KEYS_DIR, and JWT_DEFAULT_KID).
    #[command(flatten)]
    pub keys: KeyArgs,
    /// How often the keys directory is polled for changes ("1s", "500ms" or plain seconds; the
    /// grammar of every duration flag is in `edge_process::duration`).
    #[arg(long, env = "KEYS_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub keys_reload_interval: Duration,
    /// Clock-skew allowance for exp, nbf and iat, in seconds.
    #[arg(long = "leeway-secs", env = "JWT_LEEWAY_SECS", default_value_t = auth_token::verify::DEFAULT_LEEWAY_SECS)]
    pub leeway_secs: u64,
    /// Tokens longer than this many bytes are refused before parsing.
    #[arg(long, env = "MAX_TOKEN_BYTES", default_value_t = auth_token::verify::DEFAULT_MAX_TOKEN_LEN)]
    pub max_token_bytes: usize,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Realm in `www-authenticate` challenges.
    #[arg(long, env = "REALM", default_value = "edge")]
    pub realm: String,
    /// Remove the `authorization` header before the request goes upstream.
    #[arg(long, env = "STRIP_AUTHORIZATION", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub strip_authorization: bool,
    /// Allow every request, but log and count what would have been denied.
    #[arg(long, env = "DRY_RUN", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long in-flight checks may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Tokio worker threads (default: the number of CPUs available to the process).
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Load and validate the configuration and keys, print a summary and exit.
    #[arg(long)]
    pub check_config: bool,
    /// login-service's revocation feed, e.g. `http://login-service:5000/revocations`. Unset:
    /// no revocation checks (a logged-out token stays valid until it expires).
    #[arg(long, env = "REVOCATION_FEED_URL")]
    pub revocation_feed_url: Option<String>,
    /// Bearer token for the feed (login-service's `REVOCATION_FEED_TOKEN`).
    #[arg(long, env = "REVOCATION_FEED_TOKEN", hide_env_values = true)]
    pub revocation_feed_token: Option<secrecy::SecretString>,
    /// Without a caught-up feed answer (nothing more behind it) for this long the revocation
    /// data is stale: the `edge-auth.revocation-feed` health service reports NOT_SERVING (and,
    /// with --revocation-fail-closed, checks are refused).
    #[arg(long, env = "REVOCATION_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub revocation_grace: Duration,
    /// Fail-open only: how long after the start checks wait (UNAVAILABLE, health NOT_SERVING)
    /// for the first revocation snapshot before deciding with an empty set (logged at ERROR).
    /// Keep it below the startup probe's budget.
    #[arg(long, env = "REVOCATION_STARTUP_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub revocation_startup_wait: Duration,
    /// When the feed is stale (and before the first snapshot), answer checks with gRPC
    /// UNAVAILABLE (Envoy: 503) and report NOT_SERVING, instead of deciding with the
    /// revocations known so far: a login-service outage then takes the edge down.
    #[arg(long, env = "REVOCATION_FAIL_CLOSED", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub revocation_fail_closed: bool,
    /// How long one long poll of the feed may wait for news (login-service caps it below its
    /// request timeout).
    #[arg(long, env = "REVOCATION_FEED_WAIT", default_value = "8s", value_parser = parse_duration)]
    pub revocation_feed_wait: Duration,
    /// Entries asked per feed page (the snapshot arrives in pages of this size; the feed caps
    /// it at 10000). Why the cap by default (issue #15 §2): a 1M-entry snapshot in 100 pages
    /// loads in under 2 s where 1000 pages took over 3 s; a page costs about 1.3 MiB here.
    #[arg(long, env = "REVOCATION_FEED_PAGE_LIMIT", default_value_t = auth_token::feed::MAX_LIMIT,
          value_parser = clap::value_parser!(i64).range(1..=auth_token::feed::MAX_LIMIT))]
    pub revocation_feed_page_limit: i64,
    /// A trusted external OIDC issuer, `NAME=URL#AUDIENCE` (repeatable; env comma-separated):
    /// keys from `URL/.well-known/openid-configuration` → `jwks_uri`, tokens must carry `iss` =
    /// URL exactly and `aud` AUDIENCE (required); default claim mapping (`sub`, `email`, no roles). Its tokens pass only routes
    /// whose `issuers` context extension names NAME. (`--issuer` is the required `iss` of our
    /// own tokens.)
    #[arg(long = "oidc-issuer", env = "OIDC_ISSUERS", value_delimiter = ',')]
    pub oidc_issuers: Vec<String>,
    /// A JSON file of external issuers with audience and claim mapping (see README "External
    /// issuers"); combined with `--oidc-issuer`.
    #[arg(long, env = "OIDC_ISSUERS_FILE")]
    pub issuers_file: Option<PathBuf>,
    /// A JWKS of our own issuer, e.g. login-service's
    /// `http://login-service:5000/.well-known/jwks.json` (repeatable; env comma-separated, at
    /// most 8): its keys verify our tokens beside the keys directory's, with the external
    /// issuers' lifecycle (startup wait, refresh, unknown-kid refresh). `https://`, or plain
    /// `http://` (warned about at startup: in-cluster only). A kid in two sources with
    /// different keys is refused.
    #[arg(long = "jwks-url", env = "JWKS_URLS", value_delimiter = ',')]
    pub jwks_urls: Vec<String>,
    /// A PEM bundle of CA certificates trusted for HTTPS to issuers and `--jwks-url`s, in
    /// addition to the system trust store (e.g. the cluster's internal CA).
    #[arg(long, env = "ISSUER_CA_FILE")]
    pub issuer_ca_file: Option<PathBuf>,
    /// How long after the start gRPC health waits (NOT_SERVING) for every external issuer's
    /// (and `--jwks-url`'s) first JWKS before serving anyway (logged at ERROR; that issuer's tokens are refused).
    #[arg(long, env = "JWKS_STARTUP_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub jwks_startup_wait: Duration,
    /// Lower bound of the JWKS refresh interval (a smaller `Cache-Control: max-age` is raised
    /// to it) and the first retry delay after a failed fetch.
    #[arg(long, env = "JWKS_REFRESH_MIN", default_value = "60s", value_parser = parse_duration)]
    pub jwks_refresh_min: Duration,
    /// Upper bound of the JWKS refresh interval (the interval without `max-age`).
    #[arg(long, env = "JWKS_REFRESH_MAX", default_value = "1h", value_parser = parse_duration)]
    pub jwks_refresh_max: Duration,
    /// At most one early JWKS refresh per issuer per this, triggered by tokens with an
    /// unknown `kid`.
    #[arg(long, env = "JWKS_UNKNOWN_KID_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub jwks_unknown_kid_interval: Duration,
    /// Time limit of one discovery or JWKS request.
    #[arg(long, env = "JWKS_FETCH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub jwks_fetch_timeout: Duration,
    /// Largest discovery or JWKS response accepted, in bytes.
    #[arg(long, env = "JWKS_MAX_BYTES", default_value_t = crate::jwks_fetch::DEFAULT_MAX_BYTES)]
    pub jwks_max_bytes: usize,

    // --- verified-token cache (issue #12, "Speed") ---
    /// Bytes (estimated) of verified tokens kept so a repeated token skips signature work; 0
    /// disables the cache. Hits still check exp/nbf/iat, revocations and the route policy.
    #[arg(long, env = "TOKEN_CACHE_BYTES", default_value_t = crate::token_cache::DEFAULT_BYTES)]
    pub token_cache_bytes: u64,
}

/// A configuration that parses but cannot be run. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The keys could not be loaded (missing, too short, bad kid, unreadable dir...).
    #[error(transparent)]
    Keys(#[from] auth_token::cli::KeyArgsError),
    /// The realm would break the quoted-string of a `www-authenticate` header.
    #[error("invalid --realm: use printable ASCII without '\"' or '\\'")]
    Realm,
    /// A zero or otherwise unusable number.
    #[error("invalid --{0}: must be greater than zero")]
    Zero(&'static str),
    /// The revocation feed URL is not an http(s) URL.
    #[error("invalid --revocation-feed-url: expected http://host:port/revocations")]
    FeedUrl,
    /// An external issuer setting is invalid.
    #[error(transparent)]
    Issuer(#[from] crate::issuers::IssuerConfigError),
    /// The issuers file cannot be read.
    #[error("cannot read --issuers-file {path}: {message}")]
    IssuersFile {
        /// The path.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// A `--jwks-url` that is not `http(s)://host[/path]`, or one given twice.
    #[error(
        "invalid --jwks-url {0:?}: need https://host[:port]/path (or http:// in-cluster), each URL once, no credentials or fragment"
    )]
    JwksUrl(String),
    /// The CA bundle cannot be read or holds no certificate.
    #[error("invalid --issuer-ca-file {path}: {message}")]
    IssuerCaFile {
        /// The path.
        path: PathBuf,
        /// The OS or PEM error.
        message: String,
    },
    /// More `--jwks-url`s than [`MAX_JWKS_URLS`].
    #[error("at most {MAX_JWKS_URLS} --jwks-url")]
    TooManyJwksUrls,
    /// `--jwks-refresh-min` above `--jwks-refresh-max`.
    #[error("invalid --jwks-refresh-min: must not exceed --jwks-refresh-max")]
    RefreshBounds,
    /// The feed token is too short or has whitespace/control characters inside (the value is
    /// never printed).
    #[error("invalid --revocation-feed-token (REVOCATION_FEED_TOKEN): need {0}")]
    FeedToken(#[from] auth_token::FeedTokenError),
    /// Fail-closed with a grace the long poll itself can outlast: readiness would flap.
    #[error(
        "invalid --revocation-grace {grace:?} with --revocation-fail-closed: must be more than --revocation-feed-wait + 5s ({wait:?} + 5s), the longest a healthy long poll takes to answer"
    )]
    FailClosedGrace {
        /// `--revocation-grace`.
        grace: Duration,
        /// `--revocation-feed-wait`.
        wait: Duration,
    },
}

impl Config {
    /// Checks what clap cannot: realm syntax and non-zero sizes and intervals.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_realm(&self.realm) {
            return Err(ConfigError::Realm);
        }
        if self.max_token_bytes == 0 {
            return Err(ConfigError::Zero("max-token-bytes"));
        }
        if self.keys_reload_interval.is_zero() {
            return Err(ConfigError::Zero("keys-reload-interval"));
        }
        if self.worker_threads == Some(0) {
            return Err(ConfigError::Zero("worker-threads"));
        }
        if let Some(url) = &self.revocation_feed_url
            && !reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        {
            return Err(ConfigError::FeedUrl);
        }
        auth_token::feed_token(self.revocation_feed_token.as_ref())?;
        for (name, value) in [
            ("jwks-refresh-min", self.jwks_refresh_min),
            ("jwks-unknown-kid-interval", self.jwks_unknown_kid_interval),
            ("jwks-fetch-timeout", self.jwks_fetch_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.jwks_max_bytes == 0 {
            return Err(ConfigError::Zero("jwks-max-bytes"));
        }
        if self.jwks_refresh_min > self.jwks_refresh_max {
            return Err(ConfigError::RefreshBounds);
        }
        self.external_issuers()?;
        self.own_jwks_urls()?;
        self.issuer_ca_pem()?;
        // Why: a healthy long poll answers up to `wait + 5s` (the client's timeout) after the
        // last answer; a grace not above that makes fail-closed readiness flap.
        if self.revocation_fail_closed
            && self.revocation_grace <= self.revocation_feed_wait + Duration::from_secs(5)
        {
            return Err(ConfigError::FailClosedGrace {
                grace: self.revocation_grace,
                wait: self.revocation_feed_wait,
            });
        }
        Ok(())
    }

    /// Validates the config and loads the keyring: everything `--check-config` checks.
    pub fn load(&self) -> Result<Keyring, ConfigError> {
        self.validate()?;
        Ok(self.keys.load()?)
    }

    /// The token validation rules this configuration asks for.
    pub fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            leeway_secs: self.leeway_secs,
            max_token_len: self.max_token_bytes,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        }
    }

    /// How to follow the revocation feed; `None` when `--revocation-feed-url` is unset.
    pub fn feed_config(&self) -> Option<FeedConfig> {
        let url = self.revocation_feed_url.clone()?;
        Some(FeedConfig {
            url,
            // Checked by `validate`: an invalid token never gets here.
            token: auth_token::feed_token(self.revocation_feed_token.as_ref())
                .ok()
                .flatten(),
            wait: self.revocation_feed_wait,
            page_limit: self.revocation_feed_page_limit,
            grace: self.revocation_grace,
            startup_wait: self.revocation_startup_wait,
            fail_closed: self.revocation_fail_closed,
        })
    }

    /// The external issuers of `--oidc-issuer` and `--issuers-file`, validated together.
    /// Reads the file (startup only).
    pub fn external_issuers(&self) -> Result<Vec<IssuerSettings>, ConfigError> {
        let mut all = self
            .oidc_issuers
            .iter()
            .filter(|v| !v.trim().is_empty())
            .map(|v| issuers::parse_flag(v))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &self.issuers_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::IssuersFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            all.extend(issuers::parse_file(&text)?);
        }
        issuers::validate(&all)?;
        Ok(all)
    }

    /// The `--jwks-url`s, checked: `http(s)`, a host, no credentials or fragment, each once,
    /// at most [`MAX_JWKS_URLS`]. Blank entries (a trailing comma in `JWKS_URLS`) are skipped.
    pub fn own_jwks_urls(&self) -> Result<Vec<String>, ConfigError> {
        let urls: Vec<String> = self
            .jwks_urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.len() > MAX_JWKS_URLS {
            return Err(ConfigError::TooManyJwksUrls);
        }
        for (i, url) in urls.iter().enumerate() {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.has_host()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.fragment().is_none()
            });
            if !ok || urls[..i].contains(url) {
                return Err(ConfigError::JwksUrl(url.clone()));
            }
        }
        Ok(urls)
    }

    /// The `--issuer-ca-file` bundle, read and checked (startup only; public certificates).
    pub fn issuer_ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.issuer_ca_file else {
            return Ok(None);
        };
        let err = |message: String| ConfigError::IssuerCaFile {
            path: path.clone(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        crate::jwks_fetch::parse_ca_bundle(&pem).map_err(err)?;
        Ok(Some(pem))
    }

    /// How the JWKS refresh tasks schedule fetches.
    pub fn refresh_config(&self) -> RefreshConfig {
        RefreshConfig {
            bounds: RefreshBounds {
                min: self.jwks_refresh_min,
                max: self.jwks_refresh_max,
            },
            unknown_kid_interval: self.jwks_unknown_kid_interval,
        }
    }

    /// Bounds of one discovery or JWKS request.
    pub fn fetch_limits(&self) -> FetchLimits {
        FetchLimits {
            timeout: self.jwks_fetch_timeout,
            max_bytes: self.jwks_max_bytes,
        }
    }

    /// Worker threads to start: the configured number or the CPUs available.
    pub fn effective_worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
    }
}

/// One line describing a loaded configuration: kids and settings, never secrets.
pub fn summary(config: &Config, ring: &Keyring) -> String {
    format!(
        "config ok: kids=[{}] default_kid={} keys_source={} grpc_addr={} grpc_uds={} metrics_addr={} issuer={} audience={} leeway_secs={} max_token_bytes={} strip_authorization={} dry_run={} revocation_feed={} revocation_fail_closed={} revocation_startup_wait={:?}",
        ring.kids().join(","),
        ring.default_kid().unwrap_or("-"),
        if config.keys.keys_dir.is_some() {
            "dir"
        } else {
            "env"
        },
        config.grpc_addr,
        config
            .grpc_uds
            .as_deref()
            .map_or_else(|| "-".to_owned(), |p| p.display().to_string()),
        config.metrics_addr,
        config.issuer.as_deref().unwrap_or("-"),
        config.audience.as_deref().unwrap_or("-"),
        config.leeway_secs,
        config.max_token_bytes,
        config.strip_authorization,
        config.dry_run,
        config.revocation_feed_url.as_deref().unwrap_or("-"),
        config.revocation_fail_closed,
        config.revocation_startup_wait,
    )
}

fn valid_realm(realm: &str) -> bool {
    realm
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("ext-authz").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults() {
        let c = parse(&["--jwt-secret", SECRET]);
        assert_eq!(c.grpc_addr.to_string(), "0.0.0.0:9001");
        assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:9002");
        assert_eq!(c.keys_reload_interval, Duration::from_secs(1));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.leeway_secs, 30);
        assert_eq!(c.max_token_bytes, 8192);
        assert_eq!(c.realm, "edge");
        assert!(!c.dry_run && !c.strip_authorization && !c.check_config);
        c.validate().unwrap();
        let ring = c.load().unwrap();
        let line = summary(&c, &ring);
        assert!(line.contains("kids=[default]"), "{line}");
        assert!(
            line.ends_with("revocation_fail_closed=false revocation_startup_wait=10s"),
            "{line}"
        );
        assert!(!line.contains(SECRET));
    }

    #[test]
    fn bad_config() {
        let c = parse(&["--jwt-secret", SECRET, "--realm", "a\"b"]);
        assert!(matches!(c.validate(), Err(ConfigError::Realm)));
        let c = parse(&["--jwt-secret", SECRET, "--max-token-bytes", "0"]);
        assert!(matches!(c.validate(), Err(ConfigError::Zero(_))));
        let c = parse(&["--jwt-secret", "short"]);
        let err = c.load().unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(!err.contains("short\""), "{err}");
    }

    /// Security review of issue #11: a token with a trailing newline, a short or a spaced one
    /// never matches login-service's; refused at startup without printing it.
    #[test]
    fn feed_token_is_trimmed_and_validated() {
        use secrecy::ExposeSecret as _;
        let good = "0123456789abcdef".repeat(4);
        let url = "http://login-service:5000/revocations";
        let feed = |token: &str| {
            let c = parse(&[
                "--jwt-secret",
                SECRET,
                "--revocation-feed-url",
                url,
                "--revocation-feed-token",
                token,
            ]);
            c.validate().map(|()| c.feed_config().unwrap())
        };
        for ok in [good.clone(), format!("{good}\n"), format!("  {good}\r\n")] {
            let f = feed(&ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(f.token.unwrap().expose_secret(), good, "{ok:?}");
        }
        assert!(feed("").unwrap().token.is_none(), "empty: unset");
        assert!(feed(" \n").unwrap().token.is_none(), "blank: unset");
        for bad in [
            "feed-secret".to_owned(),
            "x".repeat(31),
            format!("{}\n{}", &good[..32], &good[32..]),
            format!("{} {}", &good[..32], &good[32..]),
            format!("{good}\u{7f}"),
        ] {
            let err = feed(&bad).unwrap_err();
            assert!(matches!(err, ConfigError::FeedToken(_)), "{bad:?}");
            let line = err.to_string();
            assert_eq!(
                line,
                "invalid --revocation-feed-token (REVOCATION_FEED_TOKEN): need at least 32 characters of A-Z a-z 0-9 - . _ ~ + / with optional trailing = (an RFC 6750 b64token; surrounding whitespace is trimmed)"
            );
        }
    }

    /// Fail-closed readiness follows freshness; a grace a healthy long poll can outlast flaps.
    #[test]
    fn fail_closed_grace_must_exceed_the_long_poll() {
        let c = |grace: &str, wait: &str, closed: bool| {
            let mut args = vec![
                "--jwt-secret",
                SECRET,
                "--revocation-grace",
                grace,
                "--revocation-feed-wait",
                wait,
            ];
            if closed {
                args.push("--revocation-fail-closed");
            }
            parse(&args).validate()
        };
        c("30s", "8s", true).unwrap();
        c("13001ms", "8s", true).unwrap();
        c("1s", "1s", false).unwrap();
        let err = c("13s", "8s", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --revocation-grace 13s with --revocation-fail-closed: must be more than --revocation-feed-wait + 5s (8s + 5s), the longest a healthy long poll takes to answer"
        );
        assert!(matches!(
            c("1s", "1s", true),
            Err(ConfigError::FailClosedGrace { .. })
        ));
    }

    #[test]
    fn jwks_urls() {
        let c = |urls: &[&str]| {
            let mut args = vec!["--jwt-secret", SECRET];
            for u in urls {
                args.extend(["--jwks-url", u]);
            }
            let c = parse(&args);
            c.validate().map(|()| c.own_jwks_urls().unwrap())
        };
        assert_eq!(
            c(&[
                "http://login-service:5000/.well-known/jwks.json",
                "https://a.example/jwks"
            ])
            .unwrap(),
            [
                "http://login-service:5000/.well-known/jwks.json",
                "https://a.example/jwks"
            ]
        );
        assert!(c(&[]).unwrap().is_empty());
        for bad in [
            "file:///etc/jwks.json",
            "login-service:5000/jwks",
            "https://user:pw@a.example/jwks",
            "https://a.example/jwks#x",
            "ftp://a.example/jwks",
        ] {
            assert!(matches!(c(&[bad]), Err(ConfigError::JwksUrl(_))), "{bad}");
        }
        assert!(matches!(
            c(&["https://a.example/j", "https://a.example/j"]),
            Err(ConfigError::JwksUrl(_))
        ));
        let nine: Vec<String> = (0..9).map(|i| format!("https://a.example/{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert!(matches!(c(&nine), Err(ConfigError::TooManyJwksUrls)));
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "--jwt-secret",
            SECRET,
            "--dry-run",
            "--strip-authorization",
            "--keys-reload-interval",
            "250ms",
            "--log-format",
            "json",
            "--issuer",
            "login",
        ]);
        assert!(c.dry_run && c.strip_authorization);
        assert_eq!(c.keys_reload_interval, Duration::from_millis(250));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.verifier_config().issuer.as_deref(), Some("login"));
    }
}
