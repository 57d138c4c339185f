//! The stack under test: ext-authz, login-service, demo-upstream and Envoy (the shipped
//! `envoy/envoy.yaml` or `envoy/envoy-uds.yaml`, unchanged) as child processes in a temporary
//! directory, on the shipped config's fixed ports ([`crate::ports`]); torn down (children killed
//! and reaped, database dropped, directory deleted) when [`Stack`] is dropped.
//!
//! One stack at a time per process: [`Stack::start`] takes a process-wide lock, and fails fast
//! when a port is held by something else (`make run`, another test binary).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use auth_token::{Issuer, Key};
use reqwest::blocking::{Client, RequestBuilder, Response};

use crate::client::{client, http_ok};
use crate::database::Database;
use crate::ports::{
    ENVOY, ENVOY_ADMIN, EXT_AUTHZ_GRPC, EXT_AUTHZ_METRICS, LOGIN_SERVICE, UDS_PATH, UPSTREAM,
    UPSTREAM_ADMIN, check_ports, tcp_accepts,
};
use crate::process::{Process, binary, envoy_binary, tail, workspace_root};

mod control;

pub use control::{AuthzReplica, LoginReplica, Stopped};

/// The kid of the test signing key (the key file's name).
pub const KID: &str = "e2e-1";

/// Envoy's count of requests let through because the ext_authz filter failed open
/// (`failure_mode_allow`). The shipped config fails closed, so it must stay 0: the soak checks
/// it, and an e2e test checks that the name exists (a misspelling would fail, not read 0).
pub const FAIL_OPEN_STAT: &str = "http.ingress_http.ext_authz.failure_mode_allowed";

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

/// Where a traced stack exports its spans ([`Stack::start_traced`]).
#[derive(Debug, Clone)]
struct OtlpTarget {
    endpoint: String,
    port: u16,
}

/// A user created with the real `login-service user add` CLI.
#[derive(Debug, Clone)]
pub struct User {
    /// Their login e-mail.
    pub email: String,
    /// Their password (random per stack).
    pub password: String,
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
    envoy: Option<Process>,
    ext_authz: Option<Process>,
    login: Option<Process>,
    upstream: Option<Process>,
    database: Database,
    dir: tempfile::TempDir,
    transport: Transport,
    /// Extra ext-authz flags (e.g. `--revocation-feed-url`), kept across restarts.
    ext_authz_args: Vec<String>,
    /// [`Stack::start_observed`]: JSON logs, ext-authz's allow lines (debug) included.
    observed: bool,
    /// [`Stack::start_traced`]: the OTLP endpoint every service and Envoy export spans to.
    otlp: Option<OtlpTarget>,
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

    /// Starts a stack (ext-authz over TCP) whose services log JSON (`LOG_FORMAT=json`), with
    /// ext-authz's allow lines and the demo upstream's per-request lines (both `debug`): for
    /// following one request through every log ([`Stack::log`]).
    pub fn start_observed() -> Self {
        Self::start_full_observed(Transport::Tcp, &[], false, true)
    }

    /// Starts a stack (ext-authz over TCP) that exports traces to `receiver`: the services get
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (and a short batch delay), Envoy runs the local config
    /// rendered with the `tracing` flag (`envoy/render.py`), pointed at the receiver.
    pub fn start_traced(receiver: &crate::otlp::OtlpReceiver) -> Self {
        let target = OtlpTarget {
            endpoint: receiver.endpoint(),
            port: receiver.port(),
        };
        Self::start_options(Transport::Tcp, &[], false, false, Some(target))
    }

    fn start_full(transport: Transport, ext_authz_args: &[&str], mysql: bool) -> Self {
        Self::start_full_observed(transport, ext_authz_args, mysql, false)
    }

    fn start_full_observed(
        transport: Transport,
        ext_authz_args: &[&str],
        mysql: bool,
        observed: bool,
    ) -> Self {
        Self::start_options(transport, ext_authz_args, mysql, observed, None)
    }

    fn start_options(
        transport: Transport,
        ext_authz_args: &[&str],
        mysql: bool,
        observed: bool,
        otlp: Option<OtlpTarget>,
    ) -> Self {
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
        match Self::build(
            transport,
            ext_authz_args,
            serial,
            database,
            (observed, otlp),
        ) {
            Ok(stack) => stack,
            Err(err) => panic!("cannot start the e2e stack: {err:#}"),
        }
    }

    fn build(
        transport: Transport,
        ext_authz_args: Vec<String>,
        serial: MutexGuard<'static, ()>,
        database: Database,
        (observed, otlp): (bool, Option<OtlpTarget>),
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
            observed,
            otlp,
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
        if self.observed {
            command
                .env("RUST_LOG", "info,ext_authz=debug,demo_upstream=debug")
                .env("LOG_FORMAT", "json");
        }
        if let Some(otlp) = &self.otlp {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint)
                // The batch exporter's delay (5 s by default): the test waits for the spans.
                .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        }
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
            // Why: the suites that race concurrent logins (lockout, revocation) count every
            // login as hashed; the default bound (1.5 × one verify, 2.5 × on one core) would
            // shed some with 503.
            // e2e/overload.rs tests the bound with its own `--login-max-queue-wait`.
            .env("LOGIN_MAX_QUEUE_WAIT", "9s")
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
            .arg(EXT_AUTHZ_GRPC)
            .arg("--metrics-addr")
            .arg(EXT_AUTHZ_METRICS)
            .arg("--keys-dir")
            .arg(self.gateway_keys_dir());
        if self.transport == Transport::Uds {
            command.arg("--grpc-uds").arg(UDS_PATH);
        }
        command.args(&self.ext_authz_args);
        self.ext_authz = Some(Process::spawn(
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
            Transport::Tcp => proc.wait_ready("gRPC port 9001", || tcp_accepts(EXT_AUTHZ_GRPC)),
            Transport::Uds => proc.wait_ready(UDS_PATH, || UnixStream::connect(UDS_PATH).is_ok()),
        }
    }

    /// Starts the stack's login-service on port 5000, with `args` added to its flags.
    fn spawn_login_service(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let command = self.login_serve_command(LOGIN_SERVICE, args);
        self.login = Some(Process::spawn(
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
                http_ok(&client, &format!("http://{LOGIN_SERVICE}/readyz"))
            });
    }

    fn spawn_upstream(&mut self) -> anyhow::Result<()> {
        let mut command = self.command(&binary("demo-upstream"));
        command
            .arg("--addr")
            .arg(UPSTREAM)
            .arg("--admin-addr")
            .arg(UPSTREAM_ADMIN);
        self.upstream = Some(Process::spawn(
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
        let config = match &self.otlp {
            Some(otlp) => self.render_traced_envoy(otlp.port)?,
            None => workspace_root().join(config),
        };
        let mut command = self.command(&envoy_binary());
        command
            .arg("-c")
            .arg(config)
            .arg("--disable-hot-restart")
            // The access log is flushed every 10 s by default; the tests read it.
            .arg("--file-flush-interval-msec")
            .arg("100")
            .arg("--log-level")
            .arg("warn");
        self.envoy = Some(Process::spawn("envoy", command, self.path("envoy.log"))?);
        Ok(())
    }

    /// The local config with the `tracing` flag, exporting to 127.0.0.1:`port`, written into
    /// the stack's directory.
    fn render_traced_envoy(&self, port: u16) -> anyhow::Result<PathBuf> {
        let config = self.path("envoy-traced.yaml");
        let output = Command::new("python3")
            .arg(workspace_root().join("envoy/render.py"))
            .args(["--variant", "local", "--flag", "tracing", "--set"])
            .arg(format!("otlp_port={port}"))
            .arg("--out")
            .arg(&config)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "envoy/render.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(config)
    }

    /// Envoy's TLS directory: `ca.pem` (trust it to reach [`ENVOY_TLS`]), `tls.crt`, `tls.key`.
    ///
    /// [`ENVOY_TLS`]: crate::ports::ENVOY_TLS
    pub fn tls_dir(&self) -> PathBuf {
        self.path("tls")
    }

    /// Issues a new server certificate from the same CA and moves it into Envoy's TLS
    /// directory while Envoy runs (`scripts/dev-tls.sh --renew`).
    pub fn rotate_certificate(&self) -> anyhow::Result<()> {
        dev_tls(&["--renew"], &self.tls_dir())
    }

    /// A client for [`ENVOY_TLS`](crate::ports::ENVOY_TLS) that trusts the stack's
    /// development CA only.
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

    /// ext-authz's `/metrics` text (Prometheus exposition), read from its metrics port.
    pub fn ext_authz_metrics(&self) -> String {
        self.client
            .get(format!("http://{EXT_AUTHZ_METRICS}/metrics"))
            .send()
            .and_then(Response::error_for_status)
            .and_then(Response::text)
            .expect("ext-authz /metrics")
    }

    /// ext-authz's log (stderr and stdout, every start of it appended).
    pub fn ext_authz_log(&self) -> String {
        fs::read_to_string(self.path("ext-authz.log")).unwrap_or_default()
    }

    /// Envoy's log (its JSON access log is on stdout, which goes here too).
    pub fn envoy_log(&self) -> String {
        fs::read_to_string(self.path("envoy.log")).unwrap_or_default()
    }

    /// The log (stdout and stderr) of `component`: `envoy`, `ext-authz`, `login-service` or
    /// `demo-upstream`.
    pub fn log(&self, component: &str) -> String {
        fs::read_to_string(self.path(&format!("{component}.log"))).unwrap_or_default()
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
        let issuer = Issuer {
            ttl,
            issuer: None,
            audience: None,
        };
        self.sign_issued(&issuer, sub, email, roles, iat)
    }

    /// A token signed with the stack's key by `issuer` (its `iss`, `aud` and lifetime).
    ///
    /// Why the real `Issuer` and not `auth_token::testing`: this library is a normal dependency
    /// (of `bench`), so enabling that feature here would compile the fixtures into every
    /// workspace build of the service binaries; the tests enable it as a dev-dependency.
    pub fn sign_issued(
        &self,
        issuer: &Issuer,
        sub: &str,
        email: &str,
        roles: &[&str],
        iat: u64,
    ) -> String {
        let key = Key::new(KID, self.key_secret.as_bytes()).expect("test key");
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

/// Runs `scripts/dev-tls.sh ARGS DIR` (openssl), the one maker of development TLS material
/// (also for a second Envoy that runs a rendered variant: it reads `tls/sds.yaml` too).
pub fn dev_tls(args: &[&str], dir: &Path) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::PoisonError;

    use super::SERIAL;
    use crate::ports::check_ports;

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
}
