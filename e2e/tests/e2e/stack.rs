//! The stack under test: ext-authz, login-service, demo-upstream and Envoy as child processes in a
//! temporary directory, torn down (children killed and reaped) when [`Stack`] is dropped.

use std::fs::{self, File};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::AUTHORIZATION;

/// Envoy's listener, the only address the scenarios talk to.
pub const ENVOY: &str = "http://127.0.0.1:8080";
/// Envoy's HTTPS address (the same listener's TLS filter chain). `localhost` is a name in the
/// development certificate, as is 127.0.0.1.
pub const ENVOY_TLS: &str = "https://localhost:8443";
/// Envoy's admin interface.
const ENVOY_ADMIN: &str = "http://127.0.0.1:9901";
/// demo-upstream's admin address (request counter), never routed by Envoy.
const UPSTREAM_ADMIN: &str = "127.0.0.1:8001";
/// Where `envoy/envoy-uds.yaml` expects ext-authz's Unix socket.
pub const UDS_PATH: &str = "/tmp/edge-auth/ext-authz.sock";
/// The fixed ports of the shipped config plus demo-upstream's admin port.
const PORTS: &[(u16, &str)] = &[
    (8080, "Envoy listener"),
    (8443, "Envoy HTTPS listener"),
    (9901, "Envoy admin"),
    (9001, "ext-authz gRPC"),
    (9002, "ext-authz metrics"),
    (5000, "login-service"),
    (8000, "demo-upstream"),
    (8001, "demo-upstream admin"),
];
/// How long any one component may take to become ready (debug builds on a busy 2-core machine).
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// The kid of the test signing key (the key file's name).
pub const KID: &str = "e2e-1";

/// One stack at a time: the shipped config has fixed ports.
static SERIAL: Mutex<()> = Mutex::new(());

/// How Envoy reaches ext-authz: the config file and ext-authz's listener follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `envoy/envoy.yaml`, ext-authz on 127.0.0.1:9001.
    Tcp,
    /// `envoy/envoy-uds.yaml`, ext-authz also on [`UDS_PATH`].
    Uds,
}

/// login-service's database for a stack: a SQLite file in the stack's directory (the default)
/// or a fresh database on the MariaDB at `TEST_MYSQL_URL` (default
/// `mysql://root@127.0.0.1:3306`), created with the `mysql` client and dropped on drop.
#[derive(Debug)]
pub enum Database {
    /// `login.sqlite` in the stack's directory.
    Sqlite,
    /// `mysql://…/<name>`; `(base URL, name)`.
    Mysql(String, String),
}

impl Database {
    /// A fresh MariaDB database.
    fn mysql() -> anyhow::Result<Self> {
        let base = std::env::var("TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        let db = Self::Mysql(base, name.clone());
        db.mysql_client(&format!("CREATE DATABASE `{name}`"))?;
        Ok(db)
    }

    /// Runs one statement with the `mysql` client against the server of `TEST_MYSQL_URL`
    /// (`mysql://user[:password]@host[:port]`).
    fn mysql_client(&self, sql: &str) -> anyhow::Result<()> {
        let Self::Mysql(base, _) = self else {
            return Ok(());
        };
        let rest = base.strip_prefix("mysql://").context("TEST_MYSQL_URL")?;
        let (creds, host) = rest.rsplit_once('@').unwrap_or(("root", rest));
        let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
        let (host, port) = host.split_once(':').unwrap_or((host, "3306"));
        let mut command = Command::new("mysql");
        command.args(["-h", host, "-P", port, "-u", user, "-e", sql]);
        if !password.is_empty() {
            command.env("MYSQL_PWD", password);
        }
        let output = command.output().context("run the mysql client")?;
        if !output.status.success() {
            bail!(
                "mysql -e {sql:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn url(&self, dir: &Path) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}", dir.join("login.sqlite").display()),
            Self::Mysql(base, name) => format!("{base}/{name}"),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Self::Mysql(_, name) = &*self {
            let sql = format!("DROP DATABASE IF EXISTS `{name}`");
            let _ = self.mysql_client(&sql);
        }
    }
}

/// A user created with the real `login-service user add` CLI.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub password: String,
}

/// The workspace root (`envoy/`, `target/`, `.venv/` live here).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// A workspace binary from the target directory this test runs from (`target/debug`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/e2e-<hash> → target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build the binaries first with `cargo build --workspace --bins` \
         (`make test` does)",
        path.display()
    );
    path
}

/// Envoy: `envoy` on PATH, else the pinned one in `.venv/` that scripts/bootstrap.sh installs.
pub fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|p| p.is_file())
    }) {
        return path;
    }
    let venv = workspace_root().join(".venv/bin/envoy");
    assert!(
        venv.is_file(),
        "envoy not found on PATH nor at {}: run scripts/bootstrap.sh",
        venv.display()
    );
    venv
}

/// Runs `scripts/dev-tls.sh ARGS DIR` (openssl), the one maker of development TLS material.
fn dev_tls(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/dev-tls.sh"))
        .args(args)
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "scripts/dev-tls.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// An HTTP client that never uses a proxy, never follows redirects and never hangs.
pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Polls `ready` every 50 ms until it holds or `deadline` passes.
pub fn wait_for(deadline: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process with its combined stdout/stderr in a log file; killed and reaped on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Self { name, child, log })
    }

    /// Panics with the log tail when the process has already exited.
    fn ensure_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited during the test ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }

    /// Waits for `ready`, failing with the process's log when it exits or the deadline passes.
    fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            self.ensure_running();
            if ready() {
                return;
            }
            if start.elapsed() > READY_DEADLINE {
                panic!(
                    "{} not ready ({what}) after {READY_DEADLINE:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file (for failure messages).
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn port_in_use(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        || TcpListener::bind(addr).is_err()
}

/// Fails with a message naming the first fixed port that is already taken.
fn check_ports() -> Result<(), String> {
    match PORTS.iter().find(|(port, _)| port_in_use(*port)) {
        Some((port, what)) => Err(format!(
            "port {port} ({what}) in use — stop `make run` first"
        )),
        None => Ok(()),
    }
}

fn tcp_accepts(addr: &str) -> bool {
    addr.parse()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
}

fn http_ok(client: &Client, url: &str) -> bool {
    client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .is_ok_and(|r| r.status().is_success())
}

/// A random ASCII secret of 64 characters (two v4 UUIDs' 244 random bits, hex).
fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A running stack; dropping it stops every process and deletes its directory.
///
/// Field order is drop order: processes first, then the directory, then the lock.
pub struct Stack {
    envoy: Option<Proc>,
    ext_authz: Option<Proc>,
    login: Option<Proc>,
    upstream: Option<Proc>,
    database: Database,
    dir: tempfile::TempDir,
    transport: Transport,
    /// Extra ext-authz flags (e.g. `--revocation-feed-url`), kept across restarts.
    ext_authz_args: Vec<String>,
    key_secret: String,
    client: Client,
    /// The admin user (`--admin`).
    pub admin: User,
    /// A plain user (no roles).
    pub user: User,
    _serial: MutexGuard<'static, ()>,
}

impl Stack {
    /// Starts a stack using `envoy/envoy.yaml` (ext-authz over TCP).
    pub fn start() -> Self {
        Self::start_with(Transport::Tcp)
    }

    /// Starts a stack for `transport`; panics with a clear message (and the failing component's
    /// log) when something cannot start.
    pub fn start_with(transport: Transport) -> Self {
        Self::start_with_args(transport, &[])
    }

    /// Starts a stack for `transport`, with `ext_authz_args` added to ext-authz's flags.
    pub fn start_with_args(transport: Transport, ext_authz_args: &[&str]) -> Self {
        Self::start_full(transport, ext_authz_args, false)
    }

    /// Starts a stack (ext-authz over TCP) whose login-service uses a fresh MariaDB database.
    pub fn start_mysql() -> Self {
        Self::start_full(Transport::Tcp, &[], true)
    }

    fn start_full(transport: Transport, ext_authz_args: &[&str], mysql: bool) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        for name in ["ext-authz", "login-service", "demo-upstream"] {
            binary(name);
        }
        envoy_binary();
        if let Err(message) = check_ports() {
            panic!("{message}");
        }
        let ext_authz_args = ext_authz_args.iter().map(|a| (*a).to_owned()).collect();
        let database = if mysql {
            Database::mysql()
                .unwrap_or_else(|e| panic!("cannot create the MariaDB database: {e:#}"))
        } else {
            Database::Sqlite
        };
        match Self::build(transport, ext_authz_args, serial, database) {
            Ok(stack) => stack,
            Err(err) => panic!("cannot start the e2e stack: {err:#}"),
        }
    }

    fn build(
        transport: Transport,
        ext_authz_args: Vec<String>,
        serial: MutexGuard<'static, ()>,
        database: Database,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("e2e-stack-").tempdir()?;
        let keys = dir.path().join("keys");
        fs::DirBuilder::new().mode(0o700).create(&keys)?;
        let key_secret = random_secret();
        fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(keys.join(KID))?
            .write_all(key_secret.as_bytes())?;

        if transport == Transport::Uds {
            let socket_dir = Path::new(UDS_PATH).parent().expect("socket dir");
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(socket_dir)?;
            if Path::new(UDS_PATH).exists() {
                if UnixStream::connect(UDS_PATH).is_ok() {
                    bail!("{UDS_PATH} is in use — stop `make run` (or another ext-authz) first");
                }
                fs::remove_file(UDS_PATH)?;
            }
        }

        let mut stack = Self {
            envoy: None,
            ext_authz: None,
            login: None,
            upstream: None,
            database,
            dir,
            transport,
            ext_authz_args,
            key_secret,
            client: client(),
            admin: User {
                email: "admin@example.com".into(),
                password: random_secret(),
            },
            user: User {
                email: "user@example.com".into(),
                password: random_secret(),
            },
            _serial: serial,
        };

        stack.login_cli(&["migrate"], None)?;
        let (admin, user) = (stack.admin.clone(), stack.user.clone());
        stack.login_cli(
            &["user", "add", &admin.email, "--admin", "--password-stdin"],
            Some(&admin.password),
        )?;
        stack.login_cli(
            &["user", "add", &user.email, "--password-stdin"],
            Some(&user.password),
        )?;

        // Start everything, then wait for each: startups overlap.
        stack.spawn_ext_authz()?;
        stack.spawn_login_service(&[])?;
        stack.spawn_upstream()?;
        stack.spawn_envoy()?;
        stack.wait_ext_authz();
        stack.wait_login_service();
        let client = stack.client.clone();
        let upstream_stats = format!("http://{UPSTREAM_ADMIN}/stats");
        stack
            .upstream
            .as_mut()
            .expect("upstream")
            .wait_ready("GET /stats", || http_ok(&client, &upstream_stats));
        let envoy_ready = format!("{ENVOY_ADMIN}/ready");
        stack
            .envoy
            .as_mut()
            .expect("envoy")
            .wait_ready("admin /ready", || http_ok(&client, &envoy_ready));
        Ok(stack)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command with a clean environment: nothing from the developer's shell (a `DATABASE_URL`,
    /// a `JWT_SECRET`) can leak into the stack.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .current_dir(self.dir.path());
        command
    }

    fn login_command(&self) -> Command {
        let mut command = self.command(&binary("login-service"));
        command.env("DATABASE_URL", self.database.url(self.dir.path()));
        command
    }

    /// `login-service serve` on `http_addr` with the stack's database and keys, `args` added.
    fn login_serve_command(&self, http_addr: &str, args: &[&str]) -> Command {
        let mut command = self.login_command();
        command
            .arg("serve")
            .arg("--http-addr")
            .arg(http_addr)
            .arg("--keys-dir")
            .arg(self.path("keys"))
            // Envoy (and the tests' direct requests) come from loopback: trusted, as in `make run`.
            .env("TRUSTED_PROXIES", "127.0.0.1")
            .args(args);
        command
    }

    /// Runs a `login-service` admin subcommand to completion, `stdin` piped in when given.
    pub fn login_cli(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
        let mut command = self.login_command();
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawn login-service")?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(format!("{input}\n").as_bytes())?;
        }
        drop(child.stdin.take());
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "`login-service {}` failed ({}):\n{}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn spawn_ext_authz(&mut self) -> anyhow::Result<()> {
        let mut command = self.command(&binary("ext-authz"));
        command
            .arg("--grpc-addr")
            .arg("127.0.0.1:9001")
            .arg("--metrics-addr")
            .arg("127.0.0.1:9002")
            .arg("--keys-dir")
            .arg(self.path("keys"));
        if self.transport == Transport::Uds {
            command.arg("--grpc-uds").arg(UDS_PATH);
        }
        command.args(&self.ext_authz_args);
        self.ext_authz = Some(Proc::spawn(
            "ext-authz",
            command,
            self.path("ext-authz.log"),
        )?);
        Ok(())
    }

    fn wait_ext_authz(&mut self) {
        let transport = self.transport;
        let proc = self.ext_authz.as_mut().expect("ext-authz started");
        match transport {
            Transport::Tcp => proc.wait_ready("gRPC port 9001", || tcp_accepts("127.0.0.1:9001")),
            Transport::Uds => proc.wait_ready(UDS_PATH, || UnixStream::connect(UDS_PATH).is_ok()),
        }
    }

    /// Starts the stack's login-service on port 5000, with `args` added to its flags.
    fn spawn_login_service(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let command = self.login_serve_command("127.0.0.1:5000", args);
        self.login = Some(Proc::spawn(
            "login-service",
            command,
            self.path("login-service.log"),
        )?);
        Ok(())
    }

    fn wait_login_service(&mut self) {
        let client = self.client.clone();
        self.login
            .as_mut()
            .expect("login-service started")
            .wait_ready("GET /readyz", || {
                http_ok(&client, "http://127.0.0.1:5000/readyz")
            });
    }

    fn spawn_upstream(&mut self) -> anyhow::Result<()> {
        let mut command = self.command(&binary("demo-upstream"));
        command
            .arg("--addr")
            .arg("127.0.0.1:8000")
            .arg("--admin-addr")
            .arg(UPSTREAM_ADMIN);
        self.upstream = Some(Proc::spawn(
            "demo-upstream",
            command,
            self.path("demo-upstream.log"),
        )?);
        Ok(())
    }

    fn spawn_envoy(&mut self) -> anyhow::Result<()> {
        let config = match self.transport {
            Transport::Tcp => "envoy/envoy.yaml",
            Transport::Uds => "envoy/envoy-uds.yaml",
        };
        // Envoy reads its certificate (SDS) from tls/ in its working directory, the stack's dir:
        // a development CA and a localhost certificate, as scripts/run.sh makes them.
        dev_tls(&[], &self.tls_dir())?;
        let mut command = self.command(&envoy_binary());
        command
            .arg("-c")
            .arg(workspace_root().join(config))
            .arg("--disable-hot-restart")
            // The access log is flushed every 10 s by default; the tests read it.
            .arg("--file-flush-interval-msec")
            .arg("100")
            .arg("--log-level")
            .arg("warn");
        self.envoy = Some(Proc::spawn("envoy", command, self.path("envoy.log"))?);
        Ok(())
    }

    /// Envoy's TLS directory: `ca.pem` (trust it to reach [`ENVOY_TLS`]), `tls.crt`, `tls.key`.
    pub fn tls_dir(&self) -> PathBuf {
        self.path("tls")
    }

    /// Issues a new server certificate from the same CA and moves it into Envoy's TLS
    /// directory while Envoy runs (`scripts/dev-tls.sh --renew`).
    pub fn rotate_certificate(&self) -> anyhow::Result<()> {
        dev_tls(&["--renew"], &self.tls_dir())
    }

    /// A client for [`ENVOY_TLS`] that trusts the stack's development CA only.
    pub fn https_client(&self) -> Client {
        let ca = fs::read(self.tls_dir().join("ca.pem")).expect("read ca.pem");
        Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca.pem"))
            .build()
            .expect("reqwest https client")
    }

    /// Kills ext-authz (SIGKILL: a crash, not a drain) and reaps it.
    pub fn kill_ext_authz(&mut self) {
        drop(self.ext_authz.take());
    }

    /// Starts ext-authz again with the same flags and waits until it accepts connections.
    pub fn restart_ext_authz(&mut self) {
        if self.transport == Transport::Uds && Path::new(UDS_PATH).exists() {
            let _ = fs::remove_file(UDS_PATH);
        }
        self.spawn_ext_authz().expect("restart ext-authz");
        self.wait_ext_authz();
    }

    /// Kills login-service and reaps it.
    pub fn kill_login_service(&mut self) {
        drop(self.login.take());
    }

    /// Requests demo-upstream has echoed so far (from its admin port, never through Envoy).
    pub fn upstream_requests(&self) -> u64 {
        let body: serde_json::Value = self
            .client
            .get(format!("http://{UPSTREAM_ADMIN}/stats"))
            .send()
            .and_then(Response::error_for_status)
            .and_then(Response::json)
            .expect("demo-upstream /stats");
        body["requests"].as_u64().expect("requests is a number")
    }

    /// Envoy's log (its JSON access log is on stdout, which goes here too).
    pub fn envoy_log(&self) -> String {
        fs::read_to_string(self.path("envoy.log")).unwrap_or_default()
    }

    /// A request to Envoy's listener.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{ENVOY}{path}"))
    }

    /// A request with any method to Envoy's listener.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{ENVOY}{path}"))
    }

    /// `POST /login` through Envoy with HTTP Basic credentials.
    pub fn post_login(&self, email: &str, password: &str) -> Response {
        self.request(reqwest::Method::POST, "/login")
            .basic_auth(email, Some(password))
            .send()
            .expect("POST /login")
    }

    /// Logs `user` in through Envoy and returns the access token.
    pub fn login(&self, user: &User) -> String {
        let response = self.post_login(&user.email, &user.password);
        let status = response.status();
        let text = response.text().unwrap_or_default();
        assert_eq!(status, 200, "POST /login for {}: {text}", user.email);
        let body: serde_json::Value = serde_json::from_str(&text).expect("login JSON");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// A token signed with the stack's key, valid from `iat` (Unix seconds) for `ttl`.
    pub fn sign(&self, sub: &str, email: &str, roles: &[&str], iat: u64, ttl: Duration) -> String {
        sign_with(KID, &self.key_secret, sub, email, roles, iat, ttl)
    }

    /// A token signed with the stack's key by `issuer` (its `iss`, `aud` and lifetime).
    pub fn sign_issued(
        &self,
        issuer: &auth_token::Issuer,
        sub: &str,
        email: &str,
        roles: &[&str],
        iat: u64,
    ) -> String {
        let key = auth_token::Key::new(KID, self.key_secret.as_bytes()).expect("test key");
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        issuer
            .issue(&key, sub, email, &roles, iat)
            .expect("sign")
            .token
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in [
                "envoy.log",
                "ext-authz.log",
                "login-service.log",
                "demo-upstream.log",
            ] {
                let path = self.path(name);
                eprintln!(
                    "----- {} (last lines) -----\n{}",
                    path.display(),
                    tail(&path, 30)
                );
            }
        }
    }
}

/// Signs a token with an arbitrary key (`kid`, secret), as login-service would.
pub fn sign_with(
    kid: &str,
    secret: &str,
    sub: &str,
    email: &str,
    roles: &[&str],
    iat: u64,
    ttl: Duration,
) -> String {
    let key = auth_token::Key::new(kid, secret.as_bytes()).expect("test key");
    let issuer = auth_token::Issuer {
        ttl,
        issuer: None,
        audience: None,
    };
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    issuer
        .issue(&key, sub, email, &roles, iat)
        .expect("sign")
        .token
}

/// The claims inside a token (no verification: the test only reads what login-service issued).
pub fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// `Authorization: Bearer <token>` on a request.
pub trait Bearer {
    /// Adds the bearer token.
    fn bearer(self, token: &str) -> Self;
}

impl Bearer for RequestBuilder {
    fn bearer(self, token: &str) -> Self {
        self.header(AUTHORIZATION, format!("Bearer {token}"))
    }
}

/// Status, headers and JSON body of a response, read once.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    /// Sends `request` and reads the whole response.
    pub fn of(request: RequestBuilder) -> Self {
        let response = request.send().expect("request through Envoy");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().unwrap_or_default();
        Self {
            status,
            headers,
            text,
        }
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// A response header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an ext-authz denial: `status`, the RFC 6750 challenge, JSON `{"error": error}`.
    #[track_caller]
    pub fn assert_denied(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let challenge = self.header("www-authenticate");
        assert!(
            challenge.starts_with("Bearer realm=\""),
            "www-authenticate {challenge:?}"
        );
        if error != "missing_token" {
            assert!(
                challenge.contains(&format!("error=\"{error}\"")),
                "www-authenticate {challenge:?} lacks error=\"{error}\""
            );
        }
        assert!(
            self.header("content-type").starts_with("application/json"),
            "content-type {:?}",
            self.header("content-type")
        );
        let body = self.json();
        assert_eq!(body["error"], error, "{body}");
        assert!(body["message"].is_string(), "{body}");
    }

    /// The echo of demo-upstream: asserts 200 and returns the JSON.
    #[track_caller]
    pub fn echo(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{self:?}");
        self.json()
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    auth_token::now_unix()
}

/// Sends `GET <path>` to Envoy byte for byte (HTTP clients normalize `..` away before sending)
/// and returns the status code.
pub fn raw_get_status(path: &str, token: &str) -> u16 {
    use std::io::Read as _;
    let mut stream = TcpStream::connect("127.0.0.1:8080").expect("connect to Envoy");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"))
}

#[test]
fn a_taken_port_fails_fast_with_a_clear_message() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let _taken = TcpListener::bind("127.0.0.1:9002").expect("port 9002 free for this test");
    let message = check_ports().expect_err("port 9002 is taken");
    assert_eq!(
        message,
        "port 9002 (ext-authz metrics) in use — stop `make run` first"
    );
}

// Process control for the hardening suites (attacks, faults, soak): a child module, so it can
// reach the stack's processes without widening this file's API.
#[path = "stack_control.rs"]
pub mod control;
