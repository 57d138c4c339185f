//! The real binary: migrate, user add/passwd/disable/enable/remove/list, exit codes, startup
//! configuration errors.

use std::process::{Command, Output};

use crate::helpers::{TestDb, binary, code, db_test, run_cli, run_cli_ok, spawn_app_with};
use crate::served::Served;

fn run(db: &TestDb, args: &[&str], stdin: Option<&str>) -> Output {
    run_cli(db, &[], args, stdin)
}

fn run_ok(db: &TestDb, args: &[&str], stdin: Option<&str>) -> String {
    run_cli_ok(db, &[], args, stdin)
}

async fn user_admin_commands(db: TestDb) {
    let db2 = db.alias();
    let db = tokio::task::spawn_blocking(move || {
        run_ok(&db, &["migrate"], None);
        run_ok(&db, &["migrate"], None); // idempotent
        run_ok(
            &db,
            &[
                "user",
                "add",
                "Admin@Example.com",
                "--admin",
                "--password-stdin",
            ],
            Some("s3cret:pw\n"),
        );
        run_ok(
            &db,
            &["user", "add", "user@example.com", "--password-stdin"],
            Some("pw2\r\n"),
        );
        // Duplicate (case-insensitively): 73.
        let o = run(
            &db,
            &["user", "add", "ADMIN@example.com", "--password-stdin"],
            Some("x\n"),
        );
        assert_eq!(code(&o), 73, "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
        // Invalid e-mail, empty password: 65.
        for email in ["not-an-email", "a@b@c", "' OR 1=1 --"] {
            let o = run(
                &db,
                &["user", "add", email, "--password-stdin"],
                Some("x\n"),
            );
            assert_eq!(code(&o), 65, "{email}");
        }
        let o = run(
            &db,
            &["user", "add", "e@example.com", "--password-stdin"],
            Some("\n"),
        );
        assert_eq!(code(&o), 65);
        // No TTY and no --password-stdin: usage error.
        let o = run(&db, &["user", "add", "t@example.com"], None);
        assert_eq!(code(&o), 64);
        // Unknown user: 67.
        for args in [
            &["user", "passwd", "ghost@example.com", "--password-stdin"][..],
            &["user", "disable", "ghost@example.com"][..],
            &["user", "enable", "ghost@example.com"][..],
            &["user", "remove", "ghost@example.com"][..],
        ] {
            let o = run(&db, args, Some("x\n"));
            assert_eq!(code(&o), 67, "{args:?}");
        }
        run_ok(
            &db,
            &["user", "passwd", "user@example.com", "--password-stdin"],
            Some("new pw\n"),
        );
        run_ok(&db, &["user", "disable", "user@example.com"], None);
        run_ok(&db, &["user", "disable", "user@example.com"], None); // idempotent
        let list = run_ok(&db, &["user", "list"], None);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 3, "{list}");
        assert!(lines[0].contains("email") && lines[0].contains("locked"));
        let admin: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&admin[1..], ["admin@example.com", "yes", "no", "no"]);
        let user: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&user[1..], ["user@example.com", "no", "yes", "no"]);
        run_ok(&db, &["user", "enable", "user@example.com"], None);
        db
    })
    .await
    .unwrap();

    // The accounts the CLI made log in through the server.
    let app = spawn_app_with(db2, |s| s.migrate = false).await;
    assert_eq!(
        app.login("admin@example.com", "s3cret:pw", "192.0.2.20")
            .await
            .status(),
        200
    );
    assert_eq!(
        app.login("user@example.com", "pw2", "192.0.2.20")
            .await
            .status(),
        401
    );
    assert_eq!(
        app.login("user@example.com", "new pw", "192.0.2.20")
            .await
            .status(),
        200
    );

    let db = tokio::task::spawn_blocking(move || {
        run_ok(&db, &["user", "remove", "user@example.com"], None);
        let o = run(&db, &["user", "remove", "user@example.com"], None);
        assert_eq!(code(&o), 67);
        let list = run_ok(&db, &["user", "list"], None);
        assert_eq!(list.lines().count(), 2);
        db
    })
    .await
    .unwrap();
    drop(app);
    drop(db);
}
db_test!(user_admin_commands);

#[test]
fn database_unavailable_exits_69() {
    let mut cmd = Command::new(binary());
    let o = cmd
        .env_clear()
        .env("DATABASE_URL", "mysql://root@127.0.0.1:1/none")
        .env("DB_CONNECT_TIMEOUT", "1s")
        .args(["user", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(69), "{stderr}");
    // The last line is the CLI's own message, with the hint the README gives.
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("login-service: database error: database unavailable: ")
            && last.ends_with("(is the database up, and migrated with `login-service migrate`?)"),
        "{stderr}"
    );
    assert_eq!(
        o.stdout, b"",
        "user list prints no table when it cannot read one"
    );
}

#[test]
fn startup_configuration_errors_exit_64() {
    let secret = "k".repeat(32);
    let check = |envs: &[(&str, &str)], args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(binary());
        cmd.env_clear().env("DATA_DIR", dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let o = cmd.args(args).output().unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (c, err) = check(
        &[
            ("JWT_SECRET", &secret),
            ("REVOCATION_FEED_TOKEN", &format!("{}\n", "f".repeat(64))),
        ],
        &["serve", "--check-config"],
    );
    assert_eq!(c, 0, "{err}");
    // A short feed token never matches ext-authz's: one line, 64, the value not printed.
    let (c, err) = check(
        &[
            ("JWT_SECRET", &secret),
            ("REVOCATION_FEED_TOKEN", "short-feed-token"),
        ],
        &["serve", "--check-config"],
    );
    assert_eq!(c, 64, "{err}");
    assert_eq!(
        err,
        "login-service: invalid setting: REVOCATION_FEED_TOKEN must be at least 32 characters of A-Z a-z 0-9 - . _ ~ + / with optional trailing = (an RFC 6750 b64token; surrounding whitespace is trimmed)\n"
    );
    let (c, _) = check(
        &[("JWT_SECRET", &secret), ("HTTP_ADDR", "127.0.0.1:5000")],
        &["--check-config"],
    );
    assert_eq!(c, 0, "no subcommand = serve");
    // Production settings (the default 0.0.0.0 listener) without a feed token: one line, 64.
    let (c, err) = check(&[("JWT_SECRET", &secret)], &["--check-config"]);
    assert_eq!(c, 64, "{err}");
    assert_eq!(
        err,
        "login-service: REVOCATION_FEED_TOKEN is required when listening on 0.0.0.0:5000 (not loopback): GET /revocations lists revoked users and token ids; set it (and ext-authz's --revocation-feed-token) or pass --insecure-open-feed\n"
    );
    let (c, err) = check(
        &[("JWT_SECRET", &secret), ("INSECURE_OPEN_FEED", "true")],
        &["--check-config"],
    );
    assert_eq!(c, 0, "{err}");
    let (c, err) = check(&[], &["serve", "--check-config"]);
    assert_eq!(c, 64);
    assert!(err.contains("JWT_SECRET"), "{err}");
    assert_eq!(
        err,
        "login-service: no signing keys: set JWT_SECRET or --keys-dir\n"
    );
    let (c, err) = check(&[("JWT_SECRET", "short")], &["--check-config"]);
    assert_eq!(c, 64);
    // One line, naming the rule, not the value.
    assert_eq!(
        err,
        "login-service: key \"default\" is 5 bytes; HS256 keys must be at least 32 bytes\n"
    );
    let (c, err) = check(
        &[("JWT_SECRET", &secret), ("JWT_SIGNING_KID", "nope")],
        &["--check-config"],
    );
    assert_eq!(c, 64);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(
        err,
        "login-service: signing key: JWT_SIGNING_KID \"nope\" is not in the keyring (have: default)\n"
    );
    let (c, _) = check(
        &[("JWT_SECRET", &secret), ("TOKEN_TTL", "forever")],
        &["--check-config"],
    );
    assert_eq!(c, 64);
    let (c, err) = check(
        &[("JWT_SECRET", &secret), ("DATABASE_URL", "postgres://x/y")],
        &["--check-config"],
    );
    assert_eq!(c, 64);
    assert_eq!(
        err,
        "login-service: unsupported DATABASE_URL scheme \"postgres\": use mysql://… or sqlite://PATH\n"
    );
    let (c, _) = check(&[], &["--no-such-flag"]);
    assert_eq!(c, 64);
    let (c, _) = check(&[], &["--help"]);
    assert_eq!(c, 0);
}

#[test]
fn serve_binary_migrates_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = "k".repeat(32);
    let server = Served::start_args(
        &["--migrate"],
        &[
            ("JWT_SECRET", &secret),
            ("DATA_DIR", data.to_str().unwrap()),
            ("LOG_FORMAT", "json"),
        ],
        "/readyz",
        200,
    );
    // The default database is DATA_DIR/login.sqlite, created with its directory.
    assert!(dir.path().join("data/login.sqlite").exists());
    let r = reqwest::blocking::Client::new()
        .post(server.url("/login"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // SIGTERM: a clean exit (asserted by `stop`).
    let out = server.stop();
    // JSON logs, and nothing secret in them.
    assert!(out.lines().all(|l| l.starts_with('{')), "{out}");
    assert!(!out.contains(&secret));
}
