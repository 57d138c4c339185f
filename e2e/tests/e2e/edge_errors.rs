//! Envoy's own answers (issue #13, "Errors from the edge itself"): each status Envoy generates
//! carries the services' JSON error shape (`{"error", "message"}`), `application/json`, an
//! `x-request-id`, and no `server: envoy` banner.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;

use e2e::client::{Bearer as _, Reply};
use e2e::ports::ENVOY_ADDR;
use e2e::stack::Stack;

/// A raw HTTP/1.1 exchange (for requests reqwest will not send); returns the response head.
fn raw(request: &[u8]) -> String {
    let mut stream = TcpStream::connect(ENVOY_ADDR).expect("connect to Envoy");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn envoys_own_errors_answer_json_with_a_request_id_and_no_banner() {
    let mut stack = Stack::start();

    // 413: a 1 MB body to POST /login is refused at the edge (it used to be a 503 "upstream
    // connect error" when login-service answered 413 mid-upload).
    let reply = Reply::of(
        stack
            .request(Method::POST, "/login")
            .basic_auth(&stack.admin.email, Some(&stack.admin.password))
            .body(vec![b'a'; 1 << 20]),
    );
    reply.assert_edge_error(413, "payload_too_large");
    // A small body still reaches login-service.
    let reply = Reply::of(
        stack
            .request(Method::POST, "/login")
            .basic_auth(&stack.admin.email, Some(&stack.admin.password))
            .body("x=1"),
    );
    assert_eq!(reply.status, 200, "{reply:?}");

    // 431: headers over max_request_headers_kb (32 KiB).
    let reply = Reply::of(stack.get("/hello").header("x-big", "a".repeat(40 * 1024)));
    reply.assert_edge_error(431, "headers_too_large");

    // 400: an escaped slash (path normalization) and a route-0 path.
    for path in ["/a%2Fb", "/admin;x=1"] {
        let reply = Reply::of(stack.get(path));
        reply.assert_edge_error(400, "invalid_path");
    }

    // 404: no route (`OPTIONS *`).
    let head = raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(lower.contains("x-request-id: "), "{head}");
    assert!(!lower.contains("server:"), "{head}");
    assert!(head.contains(r#""error":"not_found""#), "{head}");

    // 504: an upstream over its route timeout (15 s): demo-upstream stopped (SIGSTOP), so it
    // accepts the connection but never answers.
    let token = stack.login(&stack.admin);
    let stopped = stack.stop_process("demo-upstream");
    let reply = Reply::of(
        stack
            .get("/hello")
            .bearer(&token)
            .timeout(Duration::from_secs(30)),
    );
    drop(stopped);
    reply.assert_edge_error(504, "gateway_timeout");

    // 503: no upstream (login-service down).
    stack.kill_login_service();
    let reply = Reply::of(
        stack
            .request(Method::POST, "/login")
            .basic_auth(&stack.admin.email, Some(&stack.admin.password)),
    );
    reply.assert_edge_error(503, "service_unavailable");

    // 503: ext-authz down (fail closed, status_on_error).
    stack.kill_ext_authz();
    let reply = Reply::of(stack.get("/hello"));
    reply.assert_edge_error(503, "service_unavailable");
}
