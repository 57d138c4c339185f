//! The shipped Envoy configs: they validate with the real Envoy, each reaches ext-authz where the
//! stack starts it, and the security-relevant ext_authz settings stay as documented. That the
//! committed files are what `envoy/render.py` renders from their one source is checked by
//! `envoy/render.py --check` (`make test`), not here.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

use e2e::ports::UDS_PATH;
use e2e::process::{envoy_binary, workspace_root};

/// Every `*.yaml`/`*.yml` file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn parse(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The Envoy bootstraps inside one YAML file: the file itself when it is one, or the string
/// values of a (multi-document) Kubernetes ConfigMap's `data` that are.
fn bootstraps_in(path: &Path) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if !text.contains("static_resources") {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let Ok(doc) = <Value as serde::Deserialize>::deserialize(doc) else {
            panic!("{}: document {i} is not valid YAML", path.display());
        };
        if doc.get("static_resources").is_some() {
            found.push((
                format!("{} (document {i})", path.display()),
                serde_norway::to_string(&doc).expect("re-serialize"),
            ));
        } else if let Some(Value::Mapping(data)) = doc.get("data") {
            for (key, value) in data {
                if let Value::String(inner) = value
                    && inner.contains("static_resources")
                {
                    found.push((
                        format!("{} (document {i}, data.{key:?})", path.display()),
                        inner.clone(),
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn every_shipped_envoy_config_validates() {
    let root = workspace_root();
    let envoy = envoy_binary();
    let mut bootstraps = Vec::new();
    for dir in ["envoy", "manifests"] {
        for file in yaml_files(&root.join(dir)) {
            bootstraps.extend(bootstraps_in(&file));
        }
    }
    let names: Vec<&str> = bootstraps.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.contains("envoy/envoy.yaml"))
            && names.iter().any(|n| n.contains("envoy/envoy-uds.yaml")),
        "expected envoy/envoy.yaml and envoy/envoy-uds.yaml among {names:?}"
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    // The HTTPS chain's SDS file is opened at validation, relative to the working directory.
    std::fs::create_dir(scratch.path().join("tls")).expect("mkdir tls");
    std::fs::copy(
        root.join("envoy/tls-sds.yaml"),
        scratch.path().join("tls/sds.yaml"),
    )
    .expect("copy envoy/tls-sds.yaml");
    for (i, (name, yaml)) in bootstraps.iter().enumerate() {
        let file = scratch.path().join(format!("bootstrap-{i}.yaml"));
        std::fs::write(&file, yaml).expect("write bootstrap");
        let output = Command::new(&envoy)
            .current_dir(scratch.path())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&file)
            .output()
            .expect("run envoy --mode validate");
        assert!(
            output.status.success(),
            "envoy --mode validate rejected {name}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Removes the ext_authz cluster's single endpoint address and returns it.
fn take_ext_authz_address(config: &mut Value) -> Value {
    let clusters = config["static_resources"]["clusters"]
        .as_sequence_mut()
        .expect("static_resources.clusters");
    let cluster = clusters
        .iter_mut()
        .find(|c| c["name"] == "ext_authz")
        .expect("an ext_authz cluster");
    let lb_endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        .as_sequence_mut()
        .expect("ext_authz lb_endpoints");
    assert_eq!(lb_endpoints.len(), 1, "ext_authz has exactly one endpoint");
    let endpoint = lb_endpoints[0]["endpoint"]
        .as_mapping_mut()
        .expect("ext_authz endpoint");
    endpoint.remove("address").expect("endpoint address")
}

#[test]
fn ext_authz_endpoints_are_where_the_stack_listens() {
    let root = workspace_root();
    let tcp_address = take_ext_authz_address(&mut parse(&root.join("envoy/envoy.yaml")));
    let uds_address = take_ext_authz_address(&mut parse(&root.join("envoy/envoy-uds.yaml")));
    assert_eq!(
        tcp_address["socket_address"]["address"], "127.0.0.1",
        "{tcp_address:?}"
    );
    assert_eq!(
        tcp_address["socket_address"]["port_value"], 9001,
        "{tcp_address:?}"
    );
    assert_eq!(uds_address["pipe"]["path"], UDS_PATH, "{uds_address:?}");
}

/// The HTTP connection manager of the only listener.
fn connection_manager(config: &Value) -> &Value {
    let listeners = config["static_resources"]["listeners"]
        .as_sequence()
        .expect("listeners");
    assert_eq!(listeners.len(), 1, "one listener");
    let listener = &listeners[0];
    assert_eq!(listener["address"]["socket_address"]["port_value"], 8080);
    assert_eq!(
        listener["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    let hcm = &listener["filter_chains"][0]["filters"][0];
    assert_eq!(hcm["name"], "envoy.filters.network.http_connection_manager");
    &hcm["typed_config"]
}

#[test]
fn shipped_config_keeps_its_security_settings() {
    let config = parse(&workspace_root().join("envoy/envoy.yaml"));
    assert_eq!(
        config["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    let hcm = connection_manager(&config);
    assert_eq!(hcm["use_remote_address"], true, "XFF must carry the client");
    assert_ne!(hcm["generate_request_id"], false);

    // Before ext_authz only the body-size bound (off unless a route enables it); after it only
    // the login rate limit (a local_ratelimit, which never clears the route cache) and the
    // router: nothing can clear the route cache after the check.
    let filters: Vec<&str> = hcm["http_filters"]
        .as_sequence()
        .expect("http_filters")
        .iter()
        .map(|f| f["name"].as_str().expect("filter name"))
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.buffer",
            "envoy.filters.http.ext_authz",
            "login_ratelimit",
            "envoy.filters.http.router"
        ]
    );
    assert_eq!(
        hcm["http_filters"][0]["disabled"], true,
        "buffer off by default"
    );
    assert_eq!(
        hcm["http_filters"][2]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
    );

    let authz = &hcm["http_filters"][1]["typed_config"];
    assert_eq!(authz["transport_api_version"], "V3");
    assert_eq!(authz["failure_mode_allow"], false, "fail closed");
    assert_eq!(authz["status_on_error"]["code"], "ServiceUnavailable");
    assert_eq!(
        authz["grpc_service"]["envoy_grpc"]["cluster_name"],
        "ext_authz"
    );
    for absent in ["with_request_body", "encode_raw_headers", "http_service"] {
        assert!(authz.get(absent).is_none(), "{absent} must not be set");
    }
    assert_ne!(authz["clear_route_cache"], true);
    let timeout = authz["grpc_service"]["timeout"].as_str().expect("timeout");
    let secs: f64 = timeout
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("timeout like 0.5s");
    assert!((0.25..=1.0).contains(&secs), "timeout {timeout}");

    // Local replies: only Envoy's own answers (400, 404, 413, 429, 431, 503, 504) are given a
    // JSON body; ext-authz's 401/403 (also local replies) keep theirs.
    let local_reply = &hcm["local_reply_config"];
    assert!(
        local_reply.get("body_format").is_none(),
        "no catch-all body"
    );
    for mapper in local_reply["mappers"].as_sequence().expect("mappers") {
        let filter = serde_norway::to_string(&mapper["filter"]).expect("filter");
        if filter.contains("default_value: 403") {
            // Envoy's own 403s only (an Upgrade, no request line), never ext-authz's.
            assert!(
                filter.contains("and_filter")
                    && filter.contains("name: upgrade")
                    && filter.contains("invert_match: true"),
                "{filter}"
            );
        } else if filter.contains("default_value: 429") {
            // Envoy's own 429s (its local rate limits; an upstream's 429 is not a local reply):
            // login-service's error shape, not cacheable.
            assert!(!filter.contains("and_filter"), "{filter}");
            assert_eq!(
                mapper["body_format_override"]["json_format"]["error"],
                "rate_limited"
            );
            let added: Vec<(&str, &str)> = mapper["headers_to_add"]
                .as_sequence()
                .expect("headers_to_add")
                .iter()
                .map(|h| {
                    let h = &h["header"];
                    (h["key"].as_str().unwrap(), h["value"].as_str().unwrap())
                })
                .collect();
            assert!(added.contains(&("cache-control", "no-store")), "{added:?}");
            assert!(
                added.contains(&("x-request-id", "%UNIQUE_ID%")),
                "{added:?}"
            );
        } else {
            assert!(
                [400, 404, 413, 429, 431, 503, 504]
                    .iter()
                    .any(|code| filter.contains(&format!("default_value: {code}"))),
                "{filter}"
            );
            assert!(!filter.contains("default_value: 401"), "{filter}");
        }
    }

    // The access log never records credentials.
    let log = serde_norway::to_string(&hcm["access_log"]).expect("access_log");
    assert!(!log.to_lowercase().contains("authorization"), "{log}");

    // Client headers that Envoy forwards and upstream frameworks act on are removed for every
    // route (issue #11; the list and the test: attacks::client_envoy_and_routing_headers_*).
    let vhost = &hcm["route_config"]["virtual_hosts"][0];
    let removed: Vec<&str> = vhost["request_headers_to_remove"]
        .as_sequence()
        .expect("request_headers_to_remove")
        .iter()
        .map(|h| h.as_str().expect("header name"))
        .collect();
    for name in [
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-prefix",
        "x-http-method-override",
        "forwarded",
        "x-envoy-attempt-count",
        "x-envoy-original-dst-host",
        "x-forwarded-uri",
        "x-remote-user",
        "x-forwarded-user",
        "x-auth-request-email",
        "cf-connecting-ip",
    ] {
        assert!(removed.contains(&name), "{name} not removed: {removed:?}");
    }
    // ...but never our identity headers: the router applies this list after ext_authz set them.
    for name in ["x-auth-user-id", "x-auth-email", "x-auth-roles"] {
        assert!(
            !removed.contains(&name),
            "{name} would be stripped after the check"
        );
    }

    // Routes: ambiguous paths refused, POST /login and POST /token (one route: one set of
    // rate-limit buckets) public, /admin needs the admin role, the rest protected.
    let routes = vhost["routes"].as_sequence().expect("routes");
    let per_route =
        |r: &Value| r["typed_per_filter_config"]["envoy.filters.http.ext_authz"].clone();
    // The refusal comes first and answers itself: nothing behind it is ever reached.
    let refused = &routes[0];
    assert_eq!(refused["name"], "refused_path");
    assert!(refused["match"]["safe_regex"]["regex"].is_string());
    assert_eq!(refused["direct_response"]["status"], 400);
    assert!(
        refused.get("route").is_none(),
        "refused_path never forwards"
    );
    let login = &routes[1];
    assert_eq!(login["match"]["safe_regex"]["regex"], "/(login|token)");
    assert_eq!(login["match"]["headers"][0]["name"], ":method");
    assert_eq!(
        login["match"]["headers"][0]["string_match"]["exact"],
        "POST"
    );
    assert_eq!(login["route"]["cluster"], "login_service");
    assert_eq!(per_route(login)["disabled"], true);
    // No check on /login, so nothing overwrites a client's identity headers: removed there.
    assert_eq!(
        login["request_headers_to_remove"],
        serde_norway::from_str::<Value>("[x-auth-user-id, x-auth-email, x-auth-roles]")
            .expect("list")
    );
    let admin = &routes[2];
    assert_eq!(
        admin["match"]["safe_regex"]["regex"],
        "(?i)/admin([/.:].*|%3a.*)?"
    );
    assert_eq!(
        per_route(admin)["check_settings"]["context_extensions"]["require_roles"],
        "admin"
    );
    let rest = routes.last().expect("catch-all");
    assert_eq!(rest["match"]["prefix"], "/");
    assert!(per_route(rest).is_null(), "the catch-all stays protected");
    // Only the login route, the public key documents (issue #12: GET only, to login-service,
    // identity headers removed) and the refusal (which forwards nothing) disable the check.
    let well_known = routes
        .iter()
        .find(|r| r["name"] == "well_known")
        .expect("well_known route");
    assert_eq!(
        well_known["match"]["headers"][0]["string_match"]["exact"],
        "GET"
    );
    assert_eq!(well_known["route"]["cluster"], "login_service");
    assert_eq!(
        well_known["request_headers_to_remove"],
        login["request_headers_to_remove"]
    );
    let disabled: Vec<&Value> = routes
        .iter()
        .filter(|r| per_route(r)["disabled"] == true)
        .map(|r| &r["name"])
        .collect();
    assert_eq!(disabled, ["refused_path", "login", "well_known"]);
}

/// The HTTPS filter chain serves the very same connection manager as plain HTTP (a YAML alias
/// in the source), behind TLS 1.2+ with ALPN h2 and the SDS certificate.
#[test]
fn https_chain_enforces_the_same_policy_behind_tls() {
    let config = parse(&workspace_root().join("envoy/envoy.yaml"));
    let listener = &config["static_resources"]["listeners"][0];
    assert_eq!(
        listener["additional_addresses"][0]["address"]["socket_address"]["port_value"],
        8443
    );
    let chains = listener["filter_chains"].as_sequence().expect("chains");
    assert_eq!(chains.len(), 2, "plain and TLS");
    let tls = &chains[1];
    assert_eq!(tls["filter_chain_match"]["destination_port"], 8443);
    let filters = tls["filters"].as_sequence().expect("filters");
    assert_eq!(
        filters.last(),
        chains[0]["filters"].as_sequence().expect("plain").last()
    );
    assert_eq!(filters[0]["name"], "envoy.filters.network.set_filter_state");
    let context = &tls["transport_socket"]["typed_config"]["common_tls_context"];
    assert_eq!(
        context["tls_params"]["tls_minimum_protocol_version"],
        "TLSv1_2"
    );
    assert_eq!(context["alpn_protocols"][0], "h2");
    let sds = &context["tls_certificate_sds_secret_configs"][0]["sds_config"];
    assert_eq!(sds["path_config_source"]["path"], "tls/sds.yaml");
    assert_eq!(
        sds["path_config_source"]["watched_directory"]["path"],
        "tls"
    );
    assert!(
        chains[0].get("transport_socket").is_none(),
        "the plain chain stays plain"
    );
}

/// The `issuers` lists of every route in `config` (context extensions), in order.
fn route_issuers(config: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Mapping(map) => {
                if let Some(Value::Mapping(ext)) = map.get("context_extensions")
                    && let Some(issuers) = ext.get("issuers")
                {
                    out.push(issuers.as_str().unwrap_or("<not a string>").to_owned());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Sequence(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(config, &mut out);
    out
}

/// Issue #12: the shipped configs accept our own tokens only. No route of any committed Envoy
/// bootstrap names external issuers; the example routes exist only in the variant rendered with
/// the `external_issuers` flag (which the e2e OIDC tests run), where the walk finds them.
#[test]
fn shipped_configs_accept_no_external_issuer() {
    let root = workspace_root();
    for dir in ["envoy", "manifests"] {
        for file in yaml_files(&root.join(dir)) {
            for (name, yaml) in bootstraps_in(&file) {
                let config: Value = serde_norway::from_str(&yaml).expect("bootstrap YAML");
                assert_eq!(route_issuers(&config), Vec::<String>::new(), "{name}");
            }
        }
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let variant = scratch.path().join("variant.yaml");
    let out = Command::new("python3")
        .arg(root.join("envoy/render.py"))
        .args(["--variant", "local", "--flag", "external_issuers", "--out"])
        .arg(&variant)
        .args(["--set", "external_issuers=local,keycloak"])
        .output()
        .expect("python3 envoy/render.py");
    assert!(out.status.success(), "render.py: {out:?}");
    // /sso and /sso/admin, on plain HTTP and on HTTPS (the same connection manager, a YAML
    // alias, expanded by the parser).
    assert_eq!(route_issuers(&parse(&variant)), ["local,keycloak"; 4]);
}
