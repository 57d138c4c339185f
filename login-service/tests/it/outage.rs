//! Database stopped and restarted under a running login-service, on a private `mariadbd` so no
//! other test is disturbed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::Connection as _;
use diesel::mysql::MysqlConnection;
use serde_json::Value;

use crate::helpers::{TestApp, TestDb, poll, spawn_app_with, wait_for};

/// A MariaDB server of this test's own: temp datadir, free port, killed on Drop.
struct PrivateMariadb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

impl PrivateMariadb {
    fn install() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Why: two private servers bootstrapping at once in the shared /tmp collide on MariaDB's
        // temporary-table names ("Could not remove temporary table"); each gets its own TMPDIR.
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let out = Command::new(tool("mariadb-install-db"))
            .env("TMPDIR", dir.path().join("tmp"))
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .output()
            .expect("mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            dir,
            port,
            child: None,
        }
    }

    fn base_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let d = self.dir.path();
        let child = Command::new(tool("mariadbd"))
            .env("TMPDIR", d.join("tmp"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--skip-networking=0",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--innodb-buffer-pool-size=16M",
                "--skip-log-bin",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(60), || {
            MysqlConnection::establish(&self.base_url()).is_ok()
        });
        assert!(
            up,
            "private mariadbd did not come up: {}",
            std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server (off the async runtime) and hands it back for a later restart.
    async fn stopped(mut self) -> Self {
        tokio::task::spawn_blocking(move || {
            self.kill();
            self
        })
        .await
        .unwrap()
    }

    /// Starts the server again on the same port and datadir (off the async runtime).
    async fn restarted(mut self) -> Self {
        tokio::task::spawn_blocking(move || {
            self.start();
            self
        })
        .await
        .unwrap()
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh private `mariadbd`, migrated, with a login-service on it (1 s pool timeout).
async fn app_on_private_mariadb() -> (PrivateMariadb, TestApp) {
    let server = tokio::task::spawn_blocking(|| {
        let mut s = PrivateMariadb::install();
        s.start();
        s
    })
    .await
    .unwrap();
    let base = server.base_url();
    let db = tokio::task::spawn_blocking(move || TestDb::mysql_at(&base))
        .await
        .unwrap();
    let app = spawn_app_with(db, |s| {
        s.pool.connection_timeout = Duration::from_secs(1);
    })
    .await;
    (server, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_and_restarted_mysql() {
    let (server, app) = app_on_private_mariadb().await;
    app.add_user("up@example.com", "pw", false).await;
    app.add_user("other@example.com", "pw2", true).await;
    assert_eq!(
        app.login("up@example.com", "pw", "192.0.2.30")
            .await
            .status(),
        200
    );

    // Stop the database.
    let server = server.stopped().await;

    let r = app.login("up@example.com", "pw", "192.0.2.30").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "database_unavailable");
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // Still alive.
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    // An outage is not "no such user": wrong passwords and unknown e-mails, more than the
    // per-address threshold (3), each get the same 503 — never 401 (a failure "counted" with no
    // database) nor 429 — and nothing is counted against the account (checked after the restart).
    for (email, pw) in [
        ("up@example.com", "wrong"),
        ("up@example.com", "wrong again"),
        ("ghost@example.com", "x"),
        ("up@example.com", "wrong a third time"),
        ("up@example.com", "still wrong"),
    ] {
        let r = app.login(email, pw, "192.0.2.30").await;
        assert_eq!(r.status(), 503, "{email}/{pw}");
        assert_eq!(r.headers()["retry-after"], "5");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "database_unavailable", "message": "the credential store is unavailable; retry later"})
        );
    }

    // Restart on the same port and datadir; login-service recovers by itself.
    let server = server.restarted().await;
    let ok = poll(Duration::from_secs(60), || async {
        let r = app.login("up@example.com", "pw", "192.0.2.30").await;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "login did not recover after the database restart"
    );
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let all = app.state.db.run(login_service::users::list).await.unwrap();
    assert_eq!(all.len(), 2, "no user row lost");
    assert!(all.iter().all(|u| u.failed_logins == 0));
    // The lockout counters are where failures are counted: the right password above cleared the
    // e-mail's, and the address counter (which a success never clears) saw no failure.
    let keys = login_service::lockout::Keys::new("up@example.com", "192.0.2.30".parse().unwrap());
    let source = keys.source.clone();
    let counted = app
        .state
        .db
        .run(move |c| login_service::lockout::counter(c, &source))
        .await
        .unwrap();
    assert_eq!(counted.map_or(0, |c| c.failures), 0, "{counted:?}");
    assert_eq!(
        app.login("other@example.com", "pw2", "192.0.2.30")
            .await
            .status(),
        200
    );

    // Drop the app (and its database) while the server is still up.
    drop(app);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_database_is_down() {
    // Nothing listens on port 1: the pool is built lazily, so the service still starts.
    let mut db = TestDb::sqlite();
    db.url = "mysql://root@127.0.0.1:1/auth".to_owned();
    let app = spawn_app_with(db, |s| {
        s.migrate = false;
        s.pool.connection_timeout = Duration::from_millis(500);
    })
    .await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let r = app.login("a@example.com", "pw", "192.0.2.40").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "database_unavailable");
}

/// The database killed and restarted while clients keep logging in: answers are 200 or 503
/// only (never a 401 that would count against the account, never a 500), login-service
/// recovers without a restart, and every user row is byte-for-byte what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_login_load_loses_no_rows_mysql() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let (server, app) = app_on_private_mariadb().await;
    let users = [
        ("load1@example.com", "pw-one"),
        ("load2@example.com", "pw-two"),
        ("load3@example.com", "pw-three"),
    ];
    for (i, (email, password)) in users.iter().enumerate() {
        app.add_user(email, password, i == 0).await;
    }
    let rows = || async {
        let all = app.state.db.run(login_service::users::list).await.unwrap();
        format!("{all:?}")
    };
    let before = rows().await;

    // One client per user, logging in until told to stop (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let url = app.url("/login");
    let mut clients = Vec::new();
    for (i, (email, password)) in users.iter().enumerate() {
        let (stop, url, answered) = (stop.clone(), url.clone(), answered.clone());
        let auth = crate::helpers::basic(format!("{email}:{password}").as_bytes());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let mut seen = Vec::new();
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("x-envoy-external-address", format!("192.0.2.{}", 50 + i))
                    .send()
                    .await
                    .unwrap();
                seen.push((Instant::now(), r.status().as_u16()));
                answered.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    let served = |n: usize| {
        let answered = answered.clone();
        poll(Duration::from_secs(60), move || {
            let done = answered.load(Ordering::Relaxed) >= n;
            async move { done.then_some(()) }
        })
    };
    assert!(served(30).await.is_some(), "no load before the outage");

    let killed = Instant::now();
    let server = server.stopped().await;
    let r = poll(Duration::from_secs(30), || async {
        let r = app.login("load2@example.com", "pw-two", "192.0.2.61").await;
        (r.status() == 503).then_some(())
    })
    .await;
    assert!(r.is_some(), "no 503 while the database was down");
    let first_503 = killed.elapsed();

    let restarted = Instant::now();
    let server = server.restarted().await;
    let ok = poll(Duration::from_secs(60), || async {
        let r = app
            .login("load3@example.com", "pw-three", "192.0.2.62")
            .await;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "login did not recover after the restart");
    let recovery = restarted.elapsed();
    let so_far = answered.load(Ordering::Relaxed);
    assert!(
        served(so_far + 30).await.is_some(),
        "no load after the outage"
    );
    stop.store(true, Ordering::Relaxed);

    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut last_ok_after_restart = false;
    for client in clients {
        let seen = client.await.unwrap();
        for (at, status) in &seen {
            *statuses.entry(*status).or_default() += 1;
            if *at > restarted && *status == 200 {
                last_ok_after_restart = true;
            }
        }
    }
    println!(
        "database outage under load: statuses {statuses:?}; first 503 {first_503:?} after the \
         kill; login back {recovery:?} after mariadbd restart began"
    );
    assert!(
        statuses.keys().all(|s| matches!(s, 200 | 503)),
        "unexpected statuses {statuses:?}"
    );
    assert!(statuses.get(&503).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(last_ok_after_restart, "the load clients never recovered");
    assert_eq!(rows().await, before, "user rows changed across the outage");
    for (email, password) in users {
        assert_eq!(app.login(email, password, "192.0.2.63").await.status(), 200);
    }
    drop(app);
    drop(server);
}
