//! Shared helpers: config, tokens, clients, polling with deadlines.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use auth_token::Key;
use clap::Parser as _;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use ext_authz::Config;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// One parser of the Prometheus text for every suite.
pub use auth_token::testing::metric_value;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const SECRET_2: &str = "second-integration-secret-0123456789abcd";
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

pub fn config(extra: &[&str]) -> Config {
    let base = [
        "ext-authz",
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    Config::try_parse_from(base.iter().chain(extra.iter()).copied()).expect("config parses")
}

pub fn token(kid: &str, secret: &str, roles: &[&str]) -> String {
    let key = Key::new(kid, secret.as_bytes()).unwrap();
    auth_token::testing::mint(
        &key,
        "7",
        "it@example.com",
        roles,
        auth_token::now_unix(),
        Duration::from_secs(600),
    )
}

pub fn check_request(authorization: Option<&str>, extensions: &[(&str, &str)]) -> CheckRequest {
    let mut headers = HashMap::from([
        (":path".to_owned(), "/api".to_owned()),
        ("x-request-id".to_owned(), "it-1".to_owned()),
    ]);
    if let Some(value) = authorization {
        headers.insert("authorization".to_owned(), value.to_owned());
    }
    auth_token::testing::check_request(headers, extensions)
}

/// One check through `client`; the call itself must succeed.
pub async fn check(
    client: &mut AuthorizationClient<Channel>,
    authorization: Option<&str>,
    extensions: &[(&str, &str)],
) -> CheckResponse {
    client
        .check(check_request(authorization, extensions))
        .await
        .unwrap()
        .into_inner()
}

/// The HTTP status Envoy would answer (200 for an allow).
pub fn http_status(response: &CheckResponse) -> i32 {
    match response.http_response.as_ref() {
        Some(HttpResponse::OkResponse(_)) => {
            assert_eq!(response.status.as_ref().unwrap().code, 0);
            200
        }
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().unwrap().code,
        other => panic!("unexpected http_response {other:?}"),
    }
}

pub async fn tcp_channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect over TCP")
}

pub async fn uds_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connect over UDS")
}

pub fn authz(channel: Channel) -> AuthorizationClient<Channel> {
    AuthorizationClient::new(channel)
}

pub async fn health(channel: Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check");
    ServingStatus::try_from(response.into_inner().status).unwrap()
}

/// Polls `f` until it returns `Some` or `deadline` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the health of `service` over `channel` until it is `want` (see [`eventually`]).
pub async fn wait_for_health(
    what: &str,
    deadline: Duration,
    channel: &Channel,
    service: &str,
    want: ServingStatus,
) {
    eventually(what, deadline, || {
        let channel = channel.clone();
        async move { (health(channel, service).await == want).then_some(()) }
    })
    .await;
}

/// `GET /metrics` over a raw HTTP/1.0 connection.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

/// A keys directory laid out like a mounted Kubernetes Secret and updated the way the kubelet
/// does it: a new `..<timestamp>` dir, `..data_tmp` → atomic rename over `..data`, then the
/// user-visible symlinks adjusted and the old data dir removed.
pub struct SecretDir {
    dir: tempfile::TempDir,
    generation: u32,
    files: Vec<String>,
    data_dir: Option<PathBuf>,
}

impl SecretDir {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let mut s = Self {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
            files: Vec::new(),
            data_dir: None,
        };
        s.update(files);
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn update(&mut self, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        let root = self.dir.path();
        self.generation += 1;
        let name = format!("..2026_11_27_00_00_{:02}.000000000", self.generation);
        let data = root.join(&name);
        std::fs::create_dir(&data).unwrap();
        for (kid, secret) in files {
            std::fs::write(data.join(kid), format!("{secret}\n")).unwrap();
        }
        let tmp = root.join("..data_tmp");
        symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        for (kid, _) in files {
            let link = root.join(kid);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{kid}"), &link).unwrap();
            }
        }
        for old in &self.files {
            if !files.iter().any(|(kid, _)| kid == old) {
                std::fs::remove_file(root.join(old)).unwrap();
            }
        }
        if let Some(old) = self.data_dir.replace(data) {
            std::fs::remove_dir_all(old).unwrap();
        }
        self.files = files.iter().map(|(kid, _)| (*kid).to_owned()).collect();
    }
}

/// Reads JSON log lines from the child's stderr (where every edge binary logs) until the
/// "serving" line; returns the gRPC and metrics addresses, and keeps collecting the rest of the
/// log in the background.
pub fn serving_addrs(child: &mut Child) -> (SocketAddr, SocketAddr, Receiver<String>) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serving log line before the deadline");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"] == "ext-authz serving" {
            let grpc = v["grpc_addr"].as_str().unwrap().parse().unwrap();
            let metrics = v["metrics_addr"].as_str().unwrap().parse().unwrap();
            return (grpc, metrics, rx);
        }
    }
}

/// The query a fake revocation feed reads: login-service's `GET /revocations?since=&wait=`.
#[derive(serde::Deserialize)]
pub struct FeedParams {
    pub since: i64,
    pub wait: u64,
}

/// Serves `handler` with `state` as a fake revocation feed at `GET /revocations` on a port the
/// system picks (the listener holds it: no pick-then-bind race); returns the feed's URL.
pub async fn serve_feed<S, H, T>(state: std::sync::Arc<S>, handler: H) -> String
where
    S: Send + Sync + 'static,
    H: axum::handler::Handler<T, std::sync::Arc<S>>,
    T: 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/revocations", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/revocations", axum::routing::get(handler))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}
