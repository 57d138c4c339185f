//! The stack's child processes: where their binaries are, how they are started with a log file,
//! how readiness is polled, and how they are stopped (killed and reaped on drop, or SIGTERM).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;

/// How long any one component may take to become ready (debug builds on a busy 2-core machine).
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The workspace root (`envoy/`, `target/`, `.venv/` live here).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// A workspace binary from the target directory the running program was built into
/// (`target/debug` for the tests, `target/release` for the soak driver).
///
/// Panics with the build command to run when it is missing: a stack without its binaries cannot
/// test anything.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/e2e-<hash> (a test) or target/<profile>/examples/soak → target/<profile>
    let mut dir = exe.parent().expect("the program lives in a directory");
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir = dir.parent().expect("target/<profile>");
    }
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

/// Polls `ready` until it holds or `deadline` passes; false when it never held. The one polling
/// loop of every suite (`auth_token::testing::poll`).
pub use auth_token::testing::poll::{wait_for, wait_until};

/// A child process with its combined stdout/stderr in a log file; killed (SIGKILL: a crash, not
/// a drain) and reaped on drop, so a failing test leaves nothing running.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
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

    /// The name it was started under (in failure messages and the soak report).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the log tail when the process has already exited.
    pub fn ensure_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited during the test ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }

    /// Waits for `ready`, failing with the process's log when it exits or [`READY_DEADLINE`]
    /// passes.
    pub fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        if !wait_for(READY_DEADLINE, || {
            self.ensure_running();
            ready()
        }) {
            panic!(
                "{} not ready ({what}) after {READY_DEADLINE:?}; log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }

    /// Sends SIGTERM and waits (up to `deadline`) for the process to exit; panics when it does
    /// not.
    pub fn terminate(mut self, deadline: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_until(deadline, || self.child.try_wait().expect("try_wait"))
            .unwrap_or_else(|| panic!("{} still running {deadline:?} after SIGTERM", self.name))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file (for failure messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
