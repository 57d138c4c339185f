//! `bench mint`: one access token with our claims (sub `12345`, role `admin`), signed with a
//! key file, for the token-cache steps of `scripts/bench-cache.sh`: HS256 (a secret file, as in
//! `KEYS_DIR`), EdDSA (a PKCS#8 Ed25519 `KID.pem`) or RS256 (a PKCS#1 DER RSA private key,
//! `openssl rsa -traditional -outform DER`; signed with jsonwebtoken: login-service never signs
//! RS256, an operator's issuer could).
//! Prints the token on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use auth_token::Key;

/// Options of `bench mint`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The signing key file.
    #[arg(long)]
    key: PathBuf,
    /// The kid put in the header (the key's file name in the gateway's keys dir).
    #[arg(long)]
    kid: String,
    /// `hs256`, `eddsa` or `rs256`.
    #[arg(long)]
    alg: String,
    /// Lifetime.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
}

/// Prints one token.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.key).with_context(|| format!("{}", args.key.display()))?;
    let now = auth_token::now_unix();
    let ttl = Duration::from_secs(args.ttl_secs);
    let mint = |key: &Key| {
        auth_token::testing::mint(key, "12345", "bench@example.com", &["admin"], now, ttl)
    };
    let token = match args.alg.as_str() {
        "hs256" => {
            // As auth-token reads a keys-dir file: one trailing newline is not part of the key.
            let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            mint(&Key::new(&args.kid, secret)?)
        }
        "eddsa" => mint(&Key::ed25519_private_pem(&args.kid, &bytes)?),
        "rs256" => {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some(args.kid.clone());
            let claims = serde_json::json!({
                "sub": "12345", "email": "bench@example.com", "roles": ["admin"],
                "iat": now, "nbf": now, "exp": now + args.ttl_secs,
                "jti": format!("bench-{now}"),
            });
            let key = jsonwebtoken::EncodingKey::from_rsa_der(&bytes);
            jsonwebtoken::encode(&header, &claims, &key)?
        }
        other => anyhow::bail!("--alg {other}: expected hs256, eddsa or rs256"),
    };
    println!("{token}");
    Ok(())
}
