//! The core scenario through `envoy/envoy-uds.yaml`, ext-authz on its Unix socket.

use e2e::client::{Bearer as _, Reply};
use e2e::ports::UDS_PATH;
use e2e::stack::{Stack, Transport};

#[test]
fn core_scenario_over_the_unix_socket() {
    let mut stack = Stack::start_with(Transport::Uds);
    let token = stack.login(&stack.admin);
    let echo = Reply::of(stack.get("/via-uds").bearer(&token)).echo();
    assert_eq!(echo["headers"]["x-auth-email"], stack.admin.email.as_str());
    assert_eq!(echo["headers"]["x-auth-roles"], "admin");
    Reply::of(stack.get("/via-uds")).assert_denied(401, "missing_token");

    let seen = stack.upstream_requests();
    stack.kill_ext_authz();
    let reply = Reply::of(stack.get("/via-uds").bearer(&token));
    assert_eq!(reply.status, 503, "ext-authz down on {UDS_PATH}: {reply:?}");
    assert_eq!(stack.upstream_requests(), seen);
}
