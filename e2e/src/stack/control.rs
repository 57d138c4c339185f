//! Process control for the hardening suites (`attacks`, `faults`, `revocation`, the soak
//! driver): key files, second replicas of login-service (same database) and ext-authz (same
//! keys), SIGTERM, process ids, Envoy's counters. A child module of `stack` so it can reach the stack's processes;
//! nothing here is needed by the flow tests.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::Stack;
use crate::client::http_ok;
use crate::ports::{ENVOY_ADMIN, logged_addr};
use crate::process::{Process, binary};

/// A login-service process started next to the stack's own (same database, same keys).
pub struct LoginReplica {
    /// Killed and reaped when the replica is dropped.
    _process: Process,
    /// Its base URL (`http://127.0.0.1:<port>`), reached directly, not through Envoy.
    pub url: String,
}

/// An ext-authz process started next to the stack's own, on free ports, reading the stack's keys;
/// Envoy does not know it (it is queried directly over gRPC).
pub struct AuthzReplica {
    /// Killed and reaped when the replica is dropped.
    _process: Process,
    /// Its gRPC address (`127.0.0.1:<port>`).
    pub grpc: String,
}

/// A process stopped by [`Stack::stop_process`]; SIGCONT on drop (also when a test fails, so
/// the stack's teardown never meets a stopped child).
pub struct Stopped {
    pid: u32,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.pid, "-CONT");
    }
}

/// `kill SIG PID`; panics when it fails (outside a panic, where it could only mask the first).
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok || std::thread::panicking(), "kill {sig} {pid} failed");
}

/// Writes `dir/name` through a dot-file renamed into place.
fn write_atomically(dir: &std::path::Path, name: &str, contents: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .expect("write key");
    fs::rename(&tmp, dir.join(name)).expect("rename key into place");
}

impl Stack {
    /// The keys directory both services read (file name = kid).
    pub fn keys_dir(&self) -> PathBuf {
        self.path("keys")
    }

    /// Writes key `kid` atomically (a dot-file renamed into place: the loaders skip dot-files, so
    /// a reload never sees a half-written key). `kid` is the file name: `KID`, `KID.pem` or
    /// `KID.pub.pem`.
    pub fn write_key(&self, kid: &str, secret: &str) {
        write_atomically(&self.keys_dir(), kid, secret);
    }

    /// Removes key file `kid`.
    pub fn remove_key(&self, kid: &str) {
        fs::remove_file(self.keys_dir().join(kid)).expect("remove key");
    }

    /// The keys directory ext-authz reads: its own after [`Stack::split_gateway_keys`], else the
    /// one shared with login-service.
    pub fn gateway_keys_dir(&self) -> PathBuf {
        let own = self.path("gateway-keys");
        if own.is_dir() { own } else { self.keys_dir() }
    }

    /// Gives ext-authz its own keys directory holding exactly `files` (name, contents) — e.g.
    /// only `KID.pub.pem` public keys, as an EdDSA gateway — and restarts it on it.
    pub fn split_gateway_keys(&mut self, files: &[(&str, &str)]) {
        let dir = self.path("gateway-keys");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("gateway keys dir");
        for (name, contents) in files {
            write_atomically(&dir, name, contents);
        }
        self.kill_ext_authz();
        self.restart_ext_authz();
    }

    /// Writes file `name` into ext-authz's keys directory (atomically).
    pub fn write_gateway_key(&self, name: &str, contents: &str) {
        write_atomically(&self.gateway_keys_dir(), name, contents);
    }

    /// Removes file `name` from ext-authz's keys directory.
    pub fn remove_gateway_key(&self, name: &str) {
        fs::remove_file(self.gateway_keys_dir().join(name)).expect("remove gateway key");
    }

    /// The secret of the stack's initial key ([`super::KID`]).
    pub fn key_secret(&self) -> &str {
        &self.key_secret
    }

    /// Stops login-service and starts it again with `args` added to its flags (e.g.
    /// `--signing-kid`), waiting until `/readyz` answers 200.
    pub fn restart_login_service_with(&mut self, args: &[&str]) {
        self.kill_login_service();
        self.spawn_login_service(args)
            .expect("restart login-service");
        self.wait_login_service();
    }

    /// Replaces login-service's database with a new, empty one (a SQLite stack: the file is
    /// deleted), as an operator restoring or recreating it would: login-service stopped,
    /// `migrate`, the stack's two users added again, login-service started with `args`. The
    /// revocation feed's ids start again from 1.
    pub fn replace_login_database(&mut self, args: &[&str]) {
        self.kill_login_service();
        assert!(
            matches!(self.database, crate::database::Database::Sqlite),
            "replace_login_database: SQLite stacks only"
        );
        for suffix in ["", "-wal", "-shm"] {
            let path = self.path(&format!("login.sqlite{suffix}"));
            if path.exists() {
                fs::remove_file(&path).expect("remove the SQLite database");
            }
        }
        self.login_cli(&["migrate"], None).expect("migrate");
        let (admin, user) = (self.admin.clone(), self.user.clone());
        self.login_cli(
            &["user", "add", &admin.email, "--admin", "--password-stdin"],
            Some(&admin.password),
        )
        .expect("add the admin again");
        self.login_cli(
            &["user", "add", &user.email, "--password-stdin"],
            Some(&user.password),
        )
        .expect("add the user again");
        self.spawn_login_service(args)
            .expect("restart login-service");
        self.wait_login_service();
    }

    /// Starts another login-service on a port the system picks (it logs the address it bound)
    /// against the stack's database and keys, with `args` added, and waits until its `/readyz`
    /// answers 200.
    pub fn spawn_login_replica(&self, args: &[&str]) -> LoginReplica {
        let command = self.login_serve_command("127.0.0.1:0", args);
        let log = self.path(&format!("login-replica-{}.log", replica_id()));
        let mut process =
            Process::spawn("login-service replica", command, log.clone()).expect("spawn replica");
        let addr = bound_addr(&mut process, &log, "login-service listening", "addr");
        let url = format!("http://{addr}");
        let (client, ready) = (self.client.clone(), format!("{url}/readyz"));
        process.wait_ready("GET /readyz", || http_ok(&client, &ready));
        LoginReplica {
            _process: process,
            url,
        }
    }

    /// Starts another ext-authz on ports the system picks (it logs the addresses it bound) with
    /// the stack's keys directory and `args` added; it waits for the "serving" line, not for
    /// readiness (callers poll what they need, e.g. a first allow).
    pub fn spawn_ext_authz_replica(&self, args: &[&str]) -> AuthzReplica {
        let mut command = self.command(&binary("ext-authz"));
        command
            .arg("--grpc-addr")
            .arg("127.0.0.1:0")
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--keys-dir")
            .arg(self.keys_dir())
            .args(args);
        let log = self.path(&format!("ext-authz-replica-{}.log", replica_id()));
        let mut process =
            Process::spawn("ext-authz replica", command, log.clone()).expect("spawn replica");
        let grpc = bound_addr(&mut process, &log, "ext-authz serving", "grpc_addr").to_string();
        AuthzReplica {
            _process: process,
            grpc,
        }
    }

    /// Stops the stack's process `name` (`"ext-authz"`, `"demo-upstream"`...) with SIGSTOP: it
    /// keeps its sockets, so connections are accepted by the kernel and never answered (a hung
    /// process, not a dead one). SIGCONT when the returned guard is dropped.
    #[must_use = "the process resumes when the guard is dropped"]
    pub fn stop_process(&self, name: &str) -> Stopped {
        let pid = self
            .pids()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no running {name}"))
            .1;
        signal(pid, "-STOP");
        Stopped { pid }
    }

    /// Process ids of Envoy, ext-authz, login-service and demo-upstream (for RSS sampling).
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        [&self.envoy, &self.ext_authz, &self.login, &self.upstream]
            .into_iter()
            .flatten()
            .map(|p| (p.name(), p.id()))
            .collect()
    }

    /// Sends SIGTERM to login-service and waits (up to `deadline`) for it to exit.
    pub fn terminate_login_service(&mut self, deadline: Duration) -> ExitStatus {
        self.login
            .take()
            .expect("login-service running")
            .terminate(deadline)
    }

    /// One numeric value from Envoy's admin `/stats`. Panics when the stat is absent or the
    /// admin endpoint does not answer: a misspelled or renamed stat must fail the check that
    /// reads it (the soak's `failure_mode_allowed == 0` could never fail when absent read as 0).
    #[track_caller]
    pub fn envoy_stat(&self, name: &str) -> u64 {
        let text = self
            .client
            .get(format!("{ENVOY_ADMIN}/stats?filter=^{name}$"))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("Envoy admin /stats for {name}: {e}"));
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("Envoy has no stat {name:?}; /stats answered {text:?}"));
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("Envoy stat {name} = {value:?} is not a counter: {e}"))
    }

    /// The rows of `login-service user list` (the real CLI against the stack's database).
    pub fn user_rows(&self) -> String {
        let output = self
            .login_command()
            .args(["user", "list"])
            .output()
            .expect("login-service user list");
        assert!(
            output.status.success(),
            "user list: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A number for each replica's log file, distinct within the test process.
fn replica_id() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Waits for `process` to log the address it bound (`field` of its `message` line in `log`).
fn bound_addr(
    process: &mut Process,
    log: &std::path::Path,
    message: &str,
    field: &str,
) -> std::net::SocketAddr {
    let mut addr = None;
    process.wait_ready(&format!("log line {message:?}"), || {
        addr = std::fs::read_to_string(log)
            .ok()
            .and_then(|text| logged_addr(&text, message, field));
        addr.is_some()
    });
    addr.expect("wait_ready returned: the address was logged")
}
