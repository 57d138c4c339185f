//! Shared helpers: config, tokens, clients, polling with deadlines.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
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

/// One parser of the Prometheus text, one polling loop and one kubelet-style Secret for every
/// suite.
pub use auth_token::testing::poll::{eventually, wait_until};
pub use auth_token::testing::{SecretDir, metric_value};

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
    let mut addrs = None;
    read_log_until(&rx, Duration::from_secs(30), |line| {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        if v["message"] == "ext-authz serving" {
            let grpc = v["grpc_addr"].as_str().unwrap().parse().unwrap();
            let metrics = v["metrics_addr"].as_str().unwrap().parse().unwrap();
            addrs = Some((grpc, metrics));
        }
        addrs.is_some()
    });
    let (grpc, metrics) = addrs.unwrap();
    (grpc, metrics, rx)
}

/// The log lines from `logs` up to and including the first for which `stop` holds; panics
/// with the lines read when none does within `deadline`.
pub fn read_log_until(
    logs: &Receiver<String>,
    deadline: Duration,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let end = Instant::now() + deadline;
    let mut lines = Vec::new();
    loop {
        let Ok(line) = logs.recv_timeout(end.saturating_duration_since(Instant::now())) else {
            panic!(
                "no such log line within {deadline:?}; read:\n{}",
                lines.join("\n")
            );
        };
        let done = stop(&line);
        lines.push(line);
        if done {
            return lines;
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

/// A Check that the server has accepted but cannot answer yet: sent on its own HTTP/2
/// connection with only the first byte of its gRPC message, the rest held until
/// [`HeldCheck::release`]. Why not a test hook in ext-authz: the stream is in flight on the
/// server exactly like a slow client's, so a drain test needs no production code paths.
pub struct HeldCheck {
    sender: hyper::client::conn::http2::SendRequest<GrpcBody>,
    rest: Option<(tokio::sync::mpsc::Sender<GrpcFrame>, Vec<u8>)>,
    answer: tokio::task::JoinHandle<Result<CheckResponse, String>>,
    addr: SocketAddr,
}

type GrpcFrame = Result<hyper::body::Frame<hyper::body::Bytes>, std::convert::Infallible>;
type GrpcBody = http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<GrpcFrame>>;

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

impl HeldCheck {
    /// Opens the stream for `request`, then completes one ordinary Check on the same connection:
    /// HTTP/2 opens streams in order, so once that one is answered the server holds this one.
    pub async fn start(addr: SocketAddr, request: &CheckRequest) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let message = grpc_frame(request);
        let (tx, body) = grpc_body();
        tx.send(Ok(hyper::body::Frame::data(message[..1].to_vec().into())))
            .await
            .unwrap();
        // Why: hyper queues the request to the connection here, before any later one.
        let held = sender.send_request(grpc_request(addr, body));
        let answer = tokio::spawn(async move { read_answer(held.await).await });
        let probe = unary(&mut sender, addr, request).await;
        assert!(probe.is_ok(), "probe before the hold: {probe:?}");
        Self {
            sender,
            rest: Some((tx, message[1..].to_vec())),
            answer,
            addr,
        }
    }

    /// Resolves to true when the server refuses a new stream on this connection (its GOAWAY:
    /// the graceful shutdown has reached it) while the held one stays open.
    pub fn new_stream_refused(&self) -> impl Future<Output = bool> + use<> {
        let (mut sender, addr) = (self.sender.clone(), self.addr);
        async move {
            unary(&mut sender, addr, &check_request(None, &[]))
                .await
                .is_err()
        }
    }

    /// Sends the rest of the message and waits for the answer (`Err` when the RPC failed).
    pub async fn release(mut self) -> Result<CheckResponse, String> {
        let (tx, rest) = self.rest.take().unwrap();
        // The server may already be gone (a broken drain): then the answer says so.
        let _ = tx.send(Ok(hyper::body::Frame::data(rest.into()))).await;
        drop(tx);
        self.answer.await.unwrap()
    }
}

fn grpc_frame(request: &CheckRequest) -> Vec<u8> {
    use prost::Message as _;
    let body = request.encode_to_vec();
    let mut frame = vec![0u8]; // not compressed
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn grpc_body() -> (tokio::sync::mpsc::Sender<GrpcFrame>, GrpcBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    (tx, body)
}

fn grpc_request(addr: SocketAddr, body: GrpcBody) -> hyper::Request<GrpcBody> {
    hyper::Request::post(format!("http://{addr}{CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap()
}

/// One whole Check on `sender`'s connection.
async fn unary(
    sender: &mut hyper::client::conn::http2::SendRequest<GrpcBody>,
    addr: SocketAddr,
    request: &CheckRequest,
) -> Result<CheckResponse, String> {
    let (tx, body) = grpc_body();
    tx.send(Ok(hyper::body::Frame::data(grpc_frame(request).into())))
        .await
        .unwrap();
    drop(tx);
    sender.ready().await.map_err(|e| e.to_string())?;
    read_answer(sender.send_request(grpc_request(addr, body)).await).await
}

/// The `CheckResponse` of a gRPC answer; `Err` for a transport error or a non-OK grpc-status.
async fn read_answer(
    response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<CheckResponse, String> {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    let response = response.map_err(|e| e.to_string())?;
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    if status.as_deref() != Some("0") {
        return Err(format!("grpc-status {status:?}"));
    }
    let bytes = collected.to_bytes();
    assert!(bytes.len() >= 5, "gRPC answer without a message");
    CheckResponse::decode(&bytes[5..]).map_err(|e| e.to_string())
}
