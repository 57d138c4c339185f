//! A second Envoy running a rendered variant of the shipped config (`envoy/render.py --variant
//! local --flag ... --set ...`: small buckets, the optional identity limit, the example routes for
//! external issuers) in front of a running [`crate::stack::Stack`]'s services, on its own ports
//! beside the stack's 8080/9901 and the bench's 18080-18085/19901-19906. One at a time per
//! process, like the stack whose lock its caller holds.

use std::process::Command;

use crate::client::client;
use crate::process::{Process, envoy_binary, workspace_root};
use crate::stack::dev_tls;

/// The variant Envoy's listener port.
pub const VARIANT_PORT: u16 = 18190;
/// The variant Envoy's admin port.
pub const VARIANT_ADMIN_PORT: u16 = 19990;
/// The variant's HTTPS port (every rendered variant has the TLS chain).
pub const VARIANT_TLS_PORT: u16 = 18643;

/// The running variant Envoy; stopped on drop (its [`Process`]), then its directory removed.
pub struct VariantEnvoy {
    _envoy: Process,
    _dir: tempfile::TempDir,
}

impl VariantEnvoy {
    /// Renders the `local` variant with `flags` and `sets` (besides its ports), starts it and
    /// waits until its admin `/ready` answers 200; panics with its log otherwise.
    pub fn start(flags: &[&str], sets: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("envoy.yaml");
        let mut render = Command::new("python3");
        render
            .arg(workspace_root().join("envoy/render.py"))
            .args(["--variant", "local", "--out"])
            .arg(&config)
            .args(["--set", &format!("listen_port={VARIANT_PORT}")])
            .args(["--set", &format!("admin_port={VARIANT_ADMIN_PORT}")])
            .args(["--set", &format!("tls_port={VARIANT_TLS_PORT}")]);
        for flag in flags {
            render.args(["--flag", flag]);
        }
        for set in sets {
            render.args(["--set", set]);
        }
        let out = render.output().expect("python3 envoy/render.py");
        assert!(out.status.success(), "render.py: {out:?}");
        // Its certificate (SDS): tls/sds.yaml under its working directory, as for the stack's.
        dev_tls(&[], &dir.path().join("tls")).expect("scripts/dev-tls.sh");
        let mut command = Command::new(envoy_binary());
        command
            .current_dir(dir.path())
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--log-level", "warn"]);
        let log = dir.path().join("envoy.log");
        let mut envoy = Process::spawn("variant envoy", command, log).expect("spawn envoy");
        let admin = client();
        envoy.wait_ready("GET /ready", || {
            admin
                .get(format!("http://127.0.0.1:{VARIANT_ADMIN_PORT}/ready"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
        Self {
            _envoy: envoy,
            _dir: dir,
        }
    }

    /// The URL of `path` on the variant's plain-HTTP listener.
    pub fn url(path: &str) -> String {
        format!("http://127.0.0.1:{VARIANT_PORT}{path}")
    }
}
