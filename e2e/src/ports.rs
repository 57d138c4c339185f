//! The fixed addresses of the shipped Envoy config (`envoy/envoy.yaml`) and of the services it
//! routes to: the stack listens exactly where `make run` does, so it refuses to start while
//! anything holds one of them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Envoy's listener, the only address the scenarios talk to.
pub const ENVOY: &str = "http://127.0.0.1:8080";
/// Envoy's listener as a socket address (for raw requests).
pub const ENVOY_ADDR: &str = "127.0.0.1:8080";
/// Envoy's HTTPS address (the same listener's TLS filter chain). `localhost` is a name in the
/// development certificate, as is 127.0.0.1.
pub const ENVOY_TLS: &str = "https://localhost:8443";
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
    (8443, "Envoy HTTPS listener"),
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

/// The address a child process reports it bound: the `field` of its log line carrying
/// `message`, in the text (`field=127.0.0.1:PORT`) or the JSON (`"field":"127.0.0.1:PORT"`) log
/// format. Children beside the fixed layout are started on port 0 and asked where they are:
/// a port picked by binding port 0 and dropping the listener is only "free a moment ago", and
/// two picks in a row (or a pick and another test's child) can get the same one.
pub fn logged_addr(log: &str, message: &str, field: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains(message))?;
    let (json, text) = (format!("\"{field}\":\""), format!(" {field}="));
    let rest = line
        .split_once(json.as_str())
        .or_else(|| line.split_once(text.as_str()))?
        .1;
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse().ok().filter(|a: &SocketAddr| a.port() != 0)
}

/// True when `addr` (`host:port`) accepts a TCP connection within 200 ms.
pub fn tcp_accepts(addr: &str) -> bool {
    addr.parse()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_addr_reads_both_log_formats_and_the_exact_field() {
        let text = "2026-01-01T00:00:00Z  INFO ext_authz::server: ext-authz serving \
                    grpc_addr=127.0.0.1:41001 grpc_uds=None metrics_addr=127.0.0.1:41002";
        assert_eq!(
            logged_addr(text, "ext-authz serving", "grpc_addr"),
            Some(SocketAddr::from(([127, 0, 0, 1], 41001)))
        );
        assert_eq!(
            logged_addr(text, "ext-authz serving", "metrics_addr"),
            Some(SocketAddr::from(([127, 0, 0, 1], 41002)))
        );
        // `addr` is not `grpc_addr`'s tail.
        assert_eq!(logged_addr(text, "ext-authz serving", "addr"), None);
        let json = r#"{"level":"INFO","fields":{"message":"login-service listening","addr":"127.0.0.1:5001"}}"#;
        assert_eq!(
            logged_addr(json, "login-service listening", "addr"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5001)))
        );
        assert_eq!(
            logged_addr("starting\n", "login-service listening", "addr"),
            None
        );
        // Still port 0 (a line logged before the bind) is not an answer.
        assert_eq!(
            logged_addr("x listening addr=127.0.0.1:0", "listening", "addr"),
            None
        );
    }
}
