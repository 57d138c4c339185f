//! `spawn_app`, per-test databases, and the `db_test!` macro.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use auth_token::{Issuer, Keyring};
use base64::Engine as _;
use diesel::Connection as _;
use diesel::RunQueryDsl as _;
use diesel::mysql::MysqlConnection;
use login_service::config::Settings;
use login_service::db::{DbUrl, PoolSettings};
use login_service::lockout::{self, Counter, Keys, Policies, Policy};
use login_service::password;
use login_service::state::AppState;
use login_service::users::{self, User};

/// The HMAC key every test app signs with.
pub const SECRET: &[u8] = b"integration-test-secret-0123456789abcdef";

/// A keyring with [`SECRET`] as kid `default`.
pub fn keyring() -> Keyring {
    Keyring::single("default", SECRET).unwrap()
}

/// For `async fn $name(db: TestDb)`, generates the tests `$name::sqlite` and `$name::mysql`
/// (a module and a function may share a name).
macro_rules! db_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::helpers::TestDb::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$name(crate::helpers::TestDb::mysql()).await
            }
        }
    };
}
pub(crate) use db_test;

/// Base URL of the shared MariaDB (no database part).
pub fn mysql_base() -> String {
    std::env::var("TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database of its own: SQLite temp file or `test_login_<random>` on MariaDB (dropped on Drop).
pub struct TestDb {
    /// `DATABASE_URL` for it.
    pub url: String,
    /// Temp dir (SQLite file; data dir).
    pub dir: tempfile::TempDir,
    mysql: Option<(String, String)>,
}

impl TestDb {
    /// A fresh SQLite file.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.sqlite").display());
        Self {
            url,
            dir,
            mysql: None,
        }
    }

    /// A fresh database on the shared MariaDB.
    pub fn mysql() -> Self {
        Self::mysql_at(&mysql_base())
    }

    /// A fresh database on the server at `base`.
    pub fn mysql_at(base: &str) -> Self {
        let name = format!("test_login_{:016x}", rand::random::<u64>());
        let mut c = MysqlConnection::establish(base)
            .unwrap_or_else(|e| panic!("MariaDB at {base} (set TEST_MYSQL_URL): {e}"));
        diesel::sql_query(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .execute(&mut c)
        .unwrap();
        Self {
            url: format!("{base}/{name}"),
            dir: tempfile::tempdir().unwrap(),
            mysql: Some((base.to_owned(), name)),
        }
    }

    /// The same database again, without ownership (not dropped by this value): a second replica.
    pub fn alias(&self) -> Self {
        Self {
            url: self.url.clone(),
            dir: tempfile::tempdir().unwrap(),
            mysql: None,
        }
    }

    /// The parsed URL.
    pub fn db_url(&self) -> DbUrl {
        DbUrl::parse(Some(&self.url), self.dir.path()).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, name)) = &self.mysql
            && let Ok(mut c) = MysqlConnection::establish(base)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS `{name}`")).execute(&mut c);
        }
    }
}

/// Settings for tests: real OWASP hashing, lockout after 3 per e-mail and address and 10 per
/// e-mail, address limit effectively off, the loopback client trusted as a proxy.
pub fn settings(db: &TestDb) -> Settings {
    Settings {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        db_url: db.db_url(),
        pool: PoolSettings {
            max_size: 10,
            connection_timeout: Duration::from_secs(2),
        },
        migrate: true,
        keys: Arc::new(keyring()),
        signing_kid: "default".to_owned(),
        issuer: Issuer {
            ttl: Duration::from_secs(900),
            issuer: None,
            audience: None,
        },
        lockout: Policies {
            account: Policy {
                threshold: 10,
                base: Duration::from_secs(60),
                max: Duration::from_secs(600),
                reset_after: Duration::from_secs(3600),
            },
            account_source: Policy {
                threshold: 3,
                base: Duration::from_secs(60),
                max: Duration::from_secs(600),
                reset_after: Duration::from_secs(3600),
            },
            source: Policy {
                threshold: 1000,
                base: Duration::from_secs(60),
                max: Duration::from_secs(600),
                reset_after: Duration::from_secs(3600),
            },
        },
        // The test client is the proxy: x-envoy-external-address names the client, as Envoy does.
        trusted_proxies: vec![login_service::config::parse_proxy("127.0.0.1").unwrap()],
        hash_concurrency: 2,
        // Why long: the tests' machine is shared; a test of the bound sets its own.
        max_queue_wait: Some(Duration::from_secs(15)),
        hash_params: password::owasp_params(),
        request_timeout: Duration::from_secs(20),
        max_body_bytes: 1024,
        max_header_bytes: 8192,
        shutdown_timeout: Duration::from_secs(2),
        revocation: login_service::config::RevocationSettings::default(),
        well_known: login_service::config::WellKnownSettings::default(),
        refresh: login_service::config::RefreshSettings::defaults_for(&Issuer {
            ttl: Duration::from_secs(900),
            issuer: None,
            audience: None,
        }),
    }
}

/// A running server.
pub struct TestApp {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state (database, trackers).
    pub state: Arc<AppState>,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The server's task: ends when `serve` returns.
    pub serving: tokio::task::JoinHandle<()>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    /// Its database; dropped after the server is told to stop.
    _db: TestDb,
}

/// Starts the app on port 0 with default test settings.
pub async fn spawn_app(db: TestDb) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// The app's state for `db` with `tweak`ed test settings, as `main` builds it (not served).
pub async fn state_with(db: &TestDb, tweak: impl FnOnce(&mut Settings)) -> Arc<AppState> {
    let mut s = settings(db);
    tweak(&mut s);
    tokio::task::spawn_blocking(move || login_service::server::build_state(s))
        .await
        .unwrap()
        .expect("build state")
}

/// Starts the app on port 0 after `tweak`ing the settings.
pub async fn spawn_app_with(db: TestDb, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let state = state_with(&db, tweak).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let serving = tokio::spawn(async move {
        login_service::server::serve(listener, st, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        addr,
        state,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        serving,
        _db: db,
        stop_server: Some(tx),
    }
}

/// `Basic base64(user:pass)` for raw bytes.
pub fn basic(user_pass: &[u8]) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

impl TestApp {
    /// Holds every login from now on between its password check and its success write
    /// ([`AppState::pause_after_verify`]); the returned pause lets them go on, one permit each.
    pub fn pause_logins(&self) -> Arc<login_service::login::LoginPause> {
        let pause = Arc::new(login_service::login::LoginPause::default());
        self.state.pause_after_verify.set(pause.clone()).unwrap();
        pause
    }

    /// Asks the server to shut down (as SIGTERM does).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path` with the app's client (no credentials).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Creates a user with an OWASP hash.
    pub async fn add_user(&self, email: &str, password: &str, admin: bool) {
        let hash = password::hash_with(password.as_bytes(), password::owasp_params()).unwrap();
        self.insert_raw(email, &hash, admin).await;
    }

    /// Sets the password of `email` to an OWASP hash of `password` (what `user passwd` does).
    pub async fn set_password(&self, email: &str, password: &str) {
        let hash = password::hash_with(password.as_bytes(), password::owasp_params()).unwrap();
        let e = email.to_owned();
        self.state
            .db
            .run(move |c| users::set_password(c, &e, &hash))
            .await
            .unwrap();
    }

    /// Creates a user whose `password` column holds `stored` as is.
    pub async fn insert_raw(&self, email: &str, stored: &str, admin: bool) {
        let (e, h) = (email.to_owned(), stored.to_owned());
        self.state
            .db
            .run(move |c| users::insert(c, &e, &h, admin))
            .await
            .unwrap();
    }

    /// The row of `email`.
    pub async fn user(&self, email: &str) -> Option<User> {
        let e = email.to_owned();
        self.state
            .db
            .run(move |c| users::find_by_email(c, &e))
            .await
            .unwrap()
    }

    /// POST /login with `user:pass`, from client address `ip`.
    pub async fn login(&self, email: &str, password: &str, ip: &str) -> reqwest::Response {
        self.login_raw(&basic(format!("{email}:{password}").as_bytes()), ip)
            .await
    }

    /// `POST /login{query}` (e.g. `?refresh=true`) with `email:password`, `Accept: accept` when
    /// given; no client address header.
    pub async fn login_query(
        &self,
        query: &str,
        email: &str,
        password: &str,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/login{query}")))
            .header(
                "authorization",
                basic(format!("{email}:{password}").as_bytes()),
            );
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send().await.unwrap()
    }

    /// POST /login with an arbitrary Authorization value.
    pub async fn login_raw(&self, authorization: &str, ip: &str) -> reqwest::Response {
        self.client
            .post(self.url("/login"))
            .header("authorization", authorization)
            .header("x-envoy-external-address", ip)
            .send()
            .await
            .unwrap()
    }
}

/// Polling with a deadline, shared by every suite (`auth_token::testing::poll`).
pub use auth_token::testing::poll::{poll, wait_for, wait_until};

/// Path of the built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_login-service"))
}

/// Runs the binary as a command-line tool against `db`: a clean environment with
/// `DATABASE_URL`, `RUST_LOG=warn` and `env`; `stdin`, if any, is written then closed.
pub fn run_cli(db: &TestDb, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The exit code of a process that exited normally.
#[track_caller]
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// [`run_cli`], asserting exit code 0; returns stdout.
pub fn run_cli_ok(db: &TestDb, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> String {
    let o = run_cli(db, env, args, stdin);
    assert_eq!(
        code(&o),
        0,
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

// Lockout answers and counters, shared by lockout.rs and lockout_claims.rs.

/// Status, `Retry-After` and body of a response.
pub async fn answer(r: reqwest::Response) -> (u16, Option<u64>, serde_json::Value) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, r.json().await.unwrap())
}

/// A login sent now that has passed the pre-hash check and its password check, held at
/// [`login_service::state::AppState::pause_after_verify`]; the handle yields its answer.
pub async fn held_login(
    app: &TestApp,
    pause: &Arc<login_service::login::LoginPause>,
    email: &str,
    password: &str,
    ip: &str,
) -> tokio::task::JoinHandle<(u16, Option<u64>, serde_json::Value)> {
    let (client, url) = (app.client.clone(), app.url("/login"));
    let (auth, ip) = (
        basic(format!("{email}:{password}").as_bytes()),
        ip.to_owned(),
    );
    let pending = tokio::spawn(async move {
        let r = client
            .post(url)
            .header("authorization", auth)
            .header("x-envoy-external-address", ip)
            .send()
            .await
            .unwrap();
        answer(r).await
    });
    tokio::time::timeout(std::time::Duration::from_secs(20), pause.reached.notified())
        .await
        .expect("the login reached the pause");
    pending
}

/// The documented 401 for a wrong password, unknown or disabled account.
pub fn invalid() -> (u16, Option<u64>, serde_json::Value) {
    (
        401,
        None,
        serde_json::json!({"error": "invalid_credentials", "message": "invalid credentials"}),
    )
}

/// The documented 429 of a locked account (per e-mail, or e-mail + address).
pub fn account_locked(retry: u64) -> (u16, Option<u64>, serde_json::Value) {
    (
        429,
        Some(retry),
        serde_json::json!({"error": "account_locked", "message": "too many failed logins for this account; retry later"}),
    )
}

/// The documented 429 of a locked client address.
pub fn rate_limited(retry: u64) -> (u16, Option<u64>, serde_json::Value) {
    (
        429,
        Some(retry),
        serde_json::json!({"error": "rate_limited", "message": "too many failed logins from this address; retry later"}),
    )
}

/// The three throttle keys of a login of `email` from `ip`.
pub fn keys(email: &str, ip: &str) -> Keys {
    Keys::new(email, ip.parse::<std::net::IpAddr>().unwrap())
}

/// The `jti` claim of `token` (read without verifying).
pub fn jti(token: &str) -> String {
    auth_token::testing::claims_json(token)["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

impl TestApp {
    /// Every revocation-feed row in force (the feed's first page, unbounded).
    pub async fn feed_rows(&self) -> Vec<auth_token::FeedEntry> {
        self.state
            .db
            .run(|c| login_service::revocations::page(c, 0, 0, 1_000_000))
            .await
            .unwrap()
    }

    /// The stored throttle counter of `key`.
    pub async fn counter(&self, key: &str) -> Option<Counter> {
        let k = key.to_owned();
        self.state
            .db
            .run(move |c| lockout::counter(c, &k))
            .await
            .unwrap()
    }
}

/// Sends every request at once (each task waits at one barrier, then sends) and counts the
/// answers by status: for races the database must decide.
pub async fn concurrent_statuses(
    requests: Vec<reqwest::RequestBuilder>,
) -> std::collections::BTreeMap<u16, usize> {
    let start = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                request.send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap()).or_default() += 1;
    }
    statuses
}
