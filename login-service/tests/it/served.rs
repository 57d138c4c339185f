//! The real `login-service serve` binary as a child process, with everything it writes to stdout
//! and stderr kept (the log and the metrics claims are about the real subscriber and exporter).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::helpers::binary;

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
    /// Starts `serve` with a clean environment plus `env`, on a free loopback port, and waits
    /// until `ready_path` answers `ready_status`. Retries on another port if the one picked was
    /// taken meanwhile (the child exits at once then).
    pub fn start(env: &[(&str, &str)], ready_path: &str, ready_status: u16) -> Self {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(binary())
                .env_clear()
                .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
                .envs(env.iter().copied())
                .arg("serve")
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
                base: format!("http://127.0.0.1:{port}"),
                child,
                output,
                readers,
            };
            let end = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = served.child.try_wait().unwrap() {
                    let out = served.output();
                    assert!(
                        out.contains("in use"),
                        "login-service exited ({status}) before it was ready:\n{out}"
                    );
                    break; // the port was taken: try another
                }
                if let Ok(r) = client.get(format!("{}{ready_path}", served.base)).send()
                    && r.status().as_u16() == ready_status
                {
                    return served;
                }
                assert!(Instant::now() < end, "not ready:\n{}", served.output());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no free port after 5 attempts");
    }

    /// Everything written so far to stdout and stderr (lossy UTF-8).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
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
        let end = Instant::now() + Duration::from_secs(15);
        let exit = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
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
