//! Key ring, token and request headers shared by the benches.

use std::collections::HashMap;
use std::time::Duration;

use auth_token::{Key, Keyring};

const SECRET: &[u8] = b"benchmark-secret-0123456789abcdef0123";

/// Ring with the single kid `k1` and no default key.
pub fn ring() -> Keyring {
    Keyring::from_keys(vec![Key::new("k1", SECRET).unwrap()], None).unwrap()
}

/// A token for sub `12345` signed with `k1` of `ring`, issued at `now`, valid for an hour.
pub fn token(ring: &Keyring, roles: &[&str], now: u64) -> String {
    auth_token::testing::mint(
        ring.get(Some("k1")).unwrap(),
        "12345",
        "bench@example.com",
        roles,
        now,
        Duration::from_secs(3600),
    )
}

/// The headers of a typical API request from a client, with `Authorization: Bearer <token>`.
pub fn headers(token: &str) -> HashMap<String, String> {
    [
        (":authority", "edge.example.com"),
        (":method", "GET"),
        (":path", "/api/items?page=2"),
        (":scheme", "https"),
        ("accept", "application/json"),
        ("user-agent", "bench/1.0"),
        ("x-request-id", "0b7d8f8e-5d1c-4f0e-9d55-3c2c6c2f2a11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("authorization".to_owned(), format!("Bearer {token}"))])
    .collect()
}
