//! HTTPS to issuers and `--jwks-url`s against a real TLS server on 127.0.0.1 (certificates made
//! by `scripts/dev-tls.sh`, openssl): trusted through `--issuer-ca-file`, an untrusted
//! certificate refused with a message that says so, a redirect to another host refused even
//! when that host's certificate would be trusted.

use std::path::Path;
use std::sync::Arc;

use ext_authz::jwks_fetch::{FetchError, FetchLimits, JwksClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::config;

/// A development CA and a server certificate for localhost/127.0.0.1 in a temp dir.
fn tls_material() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-tls.sh");
    let out = std::process::Command::new(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dir
}

/// Serves `/jwks` (one Ed25519 key) and `/redirect` (302 to `https://localhost:PORT/jwks`, the
/// same server under another host name) over TLS; returns `https://127.0.0.1:PORT`.
async fn serve(dir: &Path) -> String {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_, public) = auth_token::testing::ed25519_pem_pair();
    let jwk = auth_token::Key::public_pem("tls1", public.as_bytes())
        .unwrap()
        .public_jwk()
        .cloned()
        .unwrap();
    let jwks = serde_json::json!({"keys": [jwk]}).to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, jwks) = (acceptor.clone(), jwks.clone());
            tokio::spawn(async move {
                // A refused handshake (the untrusted case) ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request);
                let response = if head.starts_with("GET /redirect ") {
                    format!(
                        "HTTP/1.1 302 Found\r\nlocation: https://localhost:{port}/jwks\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=60\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                        jwks.len()
                    )
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn https_jwks_trusted_through_the_ca_file_untrusted_refused_no_cross_host_redirect() {
    let dir = tls_material();
    let base = serve(dir.path()).await;
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();

    let trusted = JwksClient::with_ca(FetchLimits::default(), Some(&ca)).unwrap();
    let fetched = trusted.jwks(&format!("{base}/jwks"), true).await.unwrap();
    assert_eq!(fetched.keys.len(), 1);
    assert_eq!(fetched.keys[0]["kid"], "tls1");
    assert_eq!(fetched.cache_control.as_deref(), Some("max-age=60"));

    // The system store does not know the development CA: refused, and the message says why
    // (it is what the refresh task logs).
    let system_only = JwksClient::new(FetchLimits::default()).unwrap();
    match system_only.jwks(&format!("{base}/jwks"), true).await {
        Err(FetchError::Transport { message, .. }) => assert!(
            message.to_ascii_lowercase().contains("certificate"),
            "{message}"
        ),
        other => panic!("untrusted certificate accepted or misreported: {other:?}"),
    }

    // localhost is trusted by the same certificate, but is another host: refused.
    match trusted.jwks(&format!("{base}/redirect"), true).await {
        Err(FetchError::Redirect(url)) => assert!(url.ends_with("/redirect"), "{url}"),
        other => panic!("cross-host redirect followed: {other:?}"),
    }
}

/// `--issuer-ca-file` must be a readable PEM bundle with a certificate: refused at startup.
#[test]
fn a_bad_issuer_ca_file_is_a_configuration_error() {
    let dir = tls_material();
    let ok = dir.path().join("ca.pem");
    let not_pem = dir.path().join("sds.yaml");
    let missing = dir.path().join("missing.pem");
    let c = |path: &Path| {
        config(&[
            "--jwt-secret",
            crate::support::SECRET,
            "--issuer-ca-file",
            path.to_str().unwrap(),
        ])
        .validate()
    };
    c(&ok).unwrap();
    for bad in [not_pem, missing] {
        let err = c(&bad).unwrap_err().to_string();
        assert!(err.starts_with("invalid --issuer-ca-file"), "{err}");
    }
}
