//! "Passwords, hashes, tokens and keys are never logged" (login-service/README.md, SECURITY.md)
//! — checked on the real binary at `RUST_LOG=trace`, over every path that handles a secret
//! (issue #20): success, hash upgrade, wrong password, unknown user, lockout, logout (one and
//! all), a revoked and a forged token, refresh tokens (issue #17: rotation, reuse, a bogus
//! one; neither token nor stored hash may appear), the feed (right and wrong feed token), a database
//! outage, and the CLI's `user add/passwd/list`. All of stdout and stderr is searched, also for
//! the database password.

use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::helpers::{TestDb, basic, mysql_base, run_cli};
use crate::served::Served;

/// `len` random alphanumeric characters after `prefix`: a value that can only appear in the
/// output if it was copied there.
fn unique(prefix: &str) -> String {
    use rand::distr::{Alphanumeric, SampleString as _};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 24)
    )
}

/// A MariaDB account with a password, allowed on one test database only; dropped on Drop.
struct DbUser {
    name: String,
    password: String,
    /// `DATABASE_URL` for the test database as this user.
    url: String,
}

impl DbUser {
    fn create(db: &TestDb) -> Self {
        let base = mysql_base();
        let host = base.rsplit('@').next().unwrap();
        let database = db.url.rsplit('/').next().unwrap();
        let name = format!("u{:012x}", rand::random::<u64>() >> 16);
        let password = unique("db-password-");
        let mut c = MysqlConnection::establish(&base).unwrap();
        diesel::sql_query(format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"
        ))
        .execute(&mut c)
        .unwrap();
        diesel::sql_query(format!("GRANT ALL ON `{database}`.* TO '{name}'@'%'"))
            .execute(&mut c)
            .unwrap();
        let url = format!("mysql://{name}:{password}@{host}/{database}");
        Self {
            name,
            password,
            url,
        }
    }
}

impl Drop for DbUser {
    fn drop(&mut self) {
        if let Ok(mut c) = MysqlConnection::establish(&mysql_base()) {
            let _ = diesel::sql_query(format!("DROP USER IF EXISTS '{}'@'%'", self.name))
                .execute(&mut c);
        }
    }
}

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = Text)]
    password: String,
}

fn stored_hash(c: &mut MysqlConnection, email: &str) -> String {
    diesel::sql_query("SELECT password FROM user WHERE email = ?")
        .bind::<Text, _>(email)
        .get_result::<Stored>(c)
        .unwrap()
        .password
}

/// The secrets in a PHC string: all of it, its salt and its hash output.
fn hash_parts(phc: &str) -> Vec<String> {
    let mut parts = vec![phc.to_owned()];
    let fields: Vec<&str> = phc.split('$').collect();
    assert_eq!(fields.len(), 6, "{phc}");
    parts.extend([fields[4].to_owned(), fields[5].to_owned()]);
    parts
}

/// A token and its signature.
fn token_parts(token: &str) -> Vec<String> {
    vec![
        token.to_owned(),
        token.rsplit('.').next().unwrap().to_owned(),
    ]
}

/// The CLI at `RUST_LOG=trace`: its whole output, after checking the exit code.
fn cli(db: &TestDb, url: &str, args: &[&str], stdin: Option<&str>, out: &mut String) {
    let o: Output = run_cli(
        db,
        &[("RUST_LOG", "trace"), ("DATABASE_URL", url)],
        args,
        stdin,
    );
    out.push_str(&String::from_utf8_lossy(&o.stdout));
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{args:?}: {out}");
}

#[test]
fn no_secret_in_any_output_at_trace_level() {
    let db = TestDb::mysql();
    // The database password is a secret too: connect as a user of this test's own.
    let db_user = DbUser::create(&db);
    let db_url = db_user.url.clone();
    let jwt_secret = unique("jwt-secret-");
    let feed_token = unique("feed-token-");
    let wrong_feed_token = unique("not-the-feed-token-");
    let pw = unique("pw-first-");
    let pw2 = unique("pw-second-");
    let wrong = unique("pw-wrong-");
    let old_pw = unique("pw-old-hash-");
    let mut secrets: Vec<String> = vec![
        db_user.password.clone(),
        jwt_secret.clone(),
        feed_token.clone(),
        wrong_feed_token.clone(),
        pw.clone(),
        pw2.clone(),
        wrong.clone(),
        old_pw.clone(),
    ];
    let mut logs = String::new();

    // The CLI: migrate, user add, passwd, list (and the hashes it stored).
    cli(&db, &db_url, &["migrate"], None, &mut logs);
    for email in ["alice@example.com", "old@example.com", "lock@example.com"] {
        cli(
            &db,
            &db_url,
            &["user", "add", email, "--password-stdin"],
            Some(&format!("{pw}\n")),
            &mut logs,
        );
    }
    let mut c = MysqlConnection::establish(&db.url).unwrap();
    secrets.extend(hash_parts(&stored_hash(&mut c, "alice@example.com")));
    cli(
        &db,
        &db_url,
        &["user", "passwd", "alice@example.com", "--password-stdin"],
        Some(&format!("{pw2}\n")),
        &mut logs,
    );
    cli(&db, &db_url, &["user", "list"], None, &mut logs);
    let alice_hash = stored_hash(&mut c, "alice@example.com");
    secrets.extend(hash_parts(&alice_hash));
    // An argon2id hash with old parameters: the login upgrades it.
    let weak = argon2::Params::new(1024, 1, 1, None).unwrap();
    let old_hash = login_service::password::hash_with(old_pw.as_bytes(), weak).unwrap();
    diesel::sql_query("UPDATE user SET password = ? WHERE email = 'old@example.com'")
        .bind::<Text, _>(&old_hash)
        .execute(&mut c)
        .unwrap();
    secrets.extend(hash_parts(&old_hash));

    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("RUST_LOG", "trace"),
        ("JWT_SECRET", jwt_secret.as_str()),
        ("REVOCATION_FEED_TOKEN", feed_token.as_str()),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ];
    let server = Served::start(&env, "/readyz", 200);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let login = |email: &str, password: &str, ip: &str| {
        let authorization = basic(format!("{email}:{password}").as_bytes());
        let r = http
            .post(server.url("/login"))
            .header("authorization", &authorization)
            .header("x-envoy-external-address", ip)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap(), authorization)
    };
    let token_of = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };

    // Success (twice: two sessions), hash upgrade, wrong password, unknown user.
    let (s, body, auth) = login("alice@example.com", &pw2, "192.0.2.1");
    assert_eq!(s, 200, "{body}");
    let token1 = token_of(&body);
    secrets.push(auth);
    let (s, body, _) = login("alice@example.com", &pw2, "192.0.2.1");
    assert_eq!(s, 200, "{body}");
    let token2 = token_of(&body);
    let (s, body, auth) = login("old@example.com", &old_pw, "192.0.2.2");
    assert_eq!(s, 200, "{body}");
    secrets.push(auth);
    secrets.extend(token_parts(&token_of(&body)));
    let upgraded = stored_hash(&mut c, "old@example.com");
    assert_ne!(upgraded, old_hash);
    secrets.extend(hash_parts(&upgraded));
    let (s, _, auth) = login("alice@example.com", &wrong, "192.0.2.3");
    assert_eq!(s, 401);
    secrets.push(auth);
    let (s, _, _) = login("nobody@example.com", &pw2, "192.0.2.3");
    assert_eq!(s, 401);
    // Lockout: 5 failures (LOCKOUT_THRESHOLD's default), then the right password: 429.
    for _ in 0..5 {
        assert_eq!(login("lock@example.com", &wrong, "192.0.2.4").0, 401);
    }
    let (s, body, _) = login("lock@example.com", &pw, "192.0.2.4");
    assert_eq!(s, 429, "{body}");

    // Refresh tokens (issue #17): a login with one, a rotation, the old one reused (the family
    // is revoked), a malformed one. Neither the tokens nor their stored hashes may appear.
    let r = http
        .post(server.url("/login?refresh=true"))
        .header(
            "authorization",
            basic(format!("alice@example.com:{pw2}").as_bytes()),
        )
        .header("x-envoy-external-address", "192.0.2.5")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    let rt1 = v["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend(token_parts(v["access_token"].as_str().unwrap()));
    let grant = |rt: &str| {
        let r = http
            .post(server.url("/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (s, body) = grant(&rt1);
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rt2 = v["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend(token_parts(v["access_token"].as_str().unwrap()));
    assert_eq!(grant(&rt1).0, 400, "reuse");
    assert_eq!(grant(&rt2).0, 400, "family revoked");
    let bogus = unique("rt-bogus-");
    assert_eq!(grant(&bogus).0, 400);
    for rt in [&rt1, &rt2, &bogus] {
        secrets.push(rt.clone());
        secrets.push(login_service::refresh::hash(rt));
    }

    // Logout of one token, then "everywhere" with the other; the revoked one again; a forged
    // one (the first token with another signature).
    let logout = |token: &str, query: &str| {
        http.post(server.url(&format!("/logout{query}")))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(logout(&token1, ""), 204);
    assert_eq!(logout(&token2, "?all=true"), 204);
    assert_eq!(logout(&token1, "?all=true"), 401);
    let (head, _) = token1.rsplit_once('.').unwrap();
    let forged = format!(
        "{head}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7_u8; 32])
    );
    assert_eq!(logout(&forged, ""), 401);
    secrets.extend(token_parts(&token1));
    secrets.extend(token_parts(&token2));
    secrets.extend(token_parts(&forged));

    // The feed, with the right token (snapshot and a long poll) and a wrong one.
    let feed = |token: &str, query: &str| {
        http.get(server.url(&format!("/revocations{query}")))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(feed(&feed_token, "?since=0"), 200);
    assert_eq!(feed(&feed_token, "?since=1000000"), 409);
    assert_eq!(feed(&feed_token, "?since=3&wait=1"), 200);
    assert_eq!(feed(&wrong_feed_token, "?since=0"), 401);
    logs.push_str(&server.stop());

    // A database outage: the same secrets against a MariaDB that does not answer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_db = format!(
        "mysql://{}:{}@127.0.0.1:{}/auth",
        db_user.name,
        db_user.password,
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let mut env = env;
    env[0].1 = &dead_db;
    let down = Served::start(&env, "/readyz", 503);
    let r = http
        .post(down.url("/login"))
        .header(
            "authorization",
            basic(format!("alice@example.com:{pw2}").as_bytes()),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = http
        .post(down.url("/logout"))
        .bearer_auth(&token2)
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = http
        .get(down.url("/revocations?since=0"))
        .bearer_auth(&feed_token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    logs.push_str(&down.stop());

    // The log is not empty (the filter really was open: nothing in this build emits at TRACE,
    // so DEBUG lines are the proof), and holds none of the secrets.
    for expected in ["DEBUG", "login-service listening", "alice@example.com"] {
        assert!(logs.contains(expected), "no {expected:?} in the output");
    }
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| logs.contains(s.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "secrets in the output: {leaked:?}\n--- output ---\n{logs}"
    );
}
