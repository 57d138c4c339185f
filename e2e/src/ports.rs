//! The fixed addresses of the shipped Envoy config (`envoy/envoy.yaml`) and of the services it
//! routes to: the stack listens exactly where `make run` does, so it refuses to start while
//! anything holds one of them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Envoy's listener, the only address the scenarios talk to.
pub const ENVOY: &str = "http://127.0.0.1:8080";
/// Envoy's listener as a socket address (for raw requests).
pub const ENVOY_ADDR: &str = "127.0.0.1:8080";
/// Envoy's admin interface.
pub const ENVOY_ADMIN: &str = "http://127.0.0.1:9901";
/// ext-authz's gRPC listener, where the shipped config sends Check.
pub const EXT_AUTHZ_GRPC: &str = "127.0.0.1:9001";
/// ext-authz's metrics listener.
pub const EXT_AUTHZ_METRICS: &str = "127.0.0.1:9002";
/// login-service's HTTP listener (also the revocation feed, reached directly).
pub const LOGIN_SERVICE: &str = "127.0.0.1:5000";
/// demo-upstream's listener.
pub const UPSTREAM: &str = "127.0.0.1:8000";
/// demo-upstream's admin address (request counter), never routed by Envoy.
pub const UPSTREAM_ADMIN: &str = "127.0.0.1:8001";
/// Where `envoy/envoy-uds.yaml` expects ext-authz's Unix socket.
pub const UDS_PATH: &str = "/tmp/edge-auth/ext-authz.sock";

/// The fixed ports of the shipped config plus demo-upstream's admin port.
const PORTS: &[(u16, &str)] = &[
    (8080, "Envoy listener"),
    (9901, "Envoy admin"),
    (9001, "ext-authz gRPC"),
    (9002, "ext-authz metrics"),
    (5000, "login-service"),
    (8000, "demo-upstream"),
    (8001, "demo-upstream admin"),
];

/// True when something accepts connections on, or holds, `127.0.0.1:port`.
fn port_in_use(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        || TcpListener::bind(addr).is_err()
}

/// Fails with a message naming the first fixed port that is already taken.
pub fn check_ports() -> Result<(), String> {
    match PORTS.iter().find(|(port, _)| port_in_use(*port)) {
        Some((port, what)) => Err(format!(
            "port {port} ({what}) in use — stop `make run` first"
        )),
        None => Ok(()),
    }
}

/// A port on 127.0.0.1 that was free a moment ago (for processes beside the fixed layout).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// True when `addr` (`host:port`) accepts a TCP connection within 200 ms.
pub fn tcp_accepts(addr: &str) -> bool {
    addr.parse()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
}
