//! The real `login-service serve` binary as a child process, with everything it writes to stdout
//! and stderr kept (the log and the metrics claims are about the real subscriber and exporter).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::helpers::{binary, wait_for, wait_until};

/// A running `login-service serve`; killed on drop.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Copies `from` into `into` until end of file.
fn drain(
    mut from: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0_u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Served {
    /// Starts `serve` with a clean environment plus `env`, on a loopback port it binds itself
    /// (port 0, read back from its "listening" line), and waits until `ready_path` answers
    /// `ready_status`.
    pub fn start(env: &[(&str, &str)], ready_path: &str, ready_status: u16) -> Self {
        Self::start_args(&[], env, ready_path, ready_status)
    }

    /// [`Served::start`] with `args` after `serve` (e.g. `--migrate`).
    pub fn start_args(
        args: &[&str],
        env: &[(&str, &str)],
        ready_path: &str,
        ready_status: u16,
    ) -> Self {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        // Port 0: the child binds a free port itself and reports it in its "listening" line,
        // so no other process can take the port between picking and binding it.
        let mut child = Command::new(binary())
            .env_clear()
            .env("HTTP_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            drain(child.stdout.take().unwrap(), output.clone()),
            drain(child.stderr.take().unwrap(), output.clone()),
        ];
        let mut served = Self {
            base: String::new(),
            child,
            output,
            readers,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!(
                    "login-service exited ({status}) before it was ready:\n{}",
                    served.output()
                );
            }
            if served.base.is_empty()
                && let Some(addr) = listening_addr(&served.output())
            {
                served.base = format!("http://{addr}");
            }
            !served.base.is_empty()
                && client
                    .get(format!("{}{ready_path}", served.base))
                    .send()
                    .is_ok_and(|r| r.status().as_u16() == ready_status)
        });
        assert!(ready, "not ready:\n{}", served.output());
        served
    }

    /// Everything written so far to stdout and stderr (lossy UTF-8).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, wait for the exit (it must be a clean one), and return the whole output.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let exit = wait_until(Duration::from_secs(15), || self.child.try_wait().unwrap())
            .expect("no exit after SIGTERM");
        for r in std::mem::take(&mut self.readers) {
            r.join().unwrap();
        }
        let out = self.output();
        assert!(exit.success(), "exit {exit}:\n{out}");
        out
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bound address in login-service's "login-service listening" line, in the text
/// (`addr=127.0.0.1:PORT`) or the JSON (`"addr":"127.0.0.1:PORT"`) log format.
pub fn listening_addr(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("login-service listening"))?;
    let rest = line
        .split_once("\"addr\":\"")
        .or_else(|| line.split_once("addr="))?
        .1;
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse::<std::net::SocketAddr>().ok().map(|_| addr)
}
