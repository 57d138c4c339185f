//! Faults under load through the real Envoy: ext-authz killed and restarted (fail closed, then
//! recover), a signing-key rotation (no valid token refused while its key is present), and
//! login-service SIGTERM with logins in flight (they complete). Loops are bounded in count and
//! time; recovery times are measured and printed (`cargo test -p e2e faults -- --nocapture`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

use auth_token::now_unix as now;
use auth_token::testing::{claims_json, mint};
use e2e::client::{Bearer as _, Reply};
use e2e::ports::ENVOY;
use e2e::process::wait_for;
use e2e::stack::{KID, Stack};

/// One request of a load loop.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Which token the request carried (index into the loop's token list).
    kind: usize,
    /// When the request was sent.
    sent: Instant,
    /// When the response arrived.
    at: Instant,
    /// Its status (0 when the request itself failed).
    status: u16,
    /// The fault phase when the request was sent and when its response arrived.
    phase: (u8, u8),
    /// The refusal's reason, from its challenge's `error_description`.
    refusal: Refusal,
}

/// The reasons a key rotation may cause, told apart (anything else is a wrong refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not an `invalid_token` refusal (allowed, or another status).
    None,
    /// `unknown signing key`: the token's kid is not loaded.
    UnknownKey,
    /// `unsupported algorithm`: no loaded key has the token's algorithm (a rotation across
    /// algorithms: EdDSA before its public key is loaded, HS256 after its secret is removed).
    UnsupportedAlgorithm,
    /// Any other `invalid_token` reason.
    Other,
}

impl Refusal {
    fn of(challenge: &str) -> Self {
        let Some((_, description)) = challenge.split_once("error=\"invalid_token\", ") else {
            return Self::None;
        };
        match description {
            "error_description=\"unknown signing key\"" => Self::UnknownKey,
            "error_description=\"unsupported algorithm\"" => Self::UnsupportedAlgorithm,
            _ => Self::Other,
        }
    }
}

/// Concurrent clients hammering Envoy, each cycling through `tokens` (`None`: no token), until
/// dropped. Threads are scoped by the caller.
struct Load<'a> {
    tokens: &'a [Option<String>],
    samples: Mutex<Vec<Sample>>,
    stop: AtomicBool,
    phase: AtomicU8,
    /// Upper bound on requests per client, whatever happens.
    max_per_client: usize,
}

impl<'a> Load<'a> {
    fn new(tokens: &'a [Option<String>]) -> Self {
        Self {
            tokens,
            samples: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            phase: AtomicU8::new(0),
            max_per_client: 20_000,
        }
    }

    /// One client's loop.
    fn run(&self, client_no: usize) {
        let client = client_fast();
        for i in 0..self.max_per_client {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let kind = (i + client_no) % self.tokens.len();
            let mut request = client.get(format!("{ENVOY}/load/{client_no}/{i}"));
            if let Some(token) = &self.tokens[kind] {
                request = request.bearer(token);
            }
            let sent_phase = self.phase.load(Ordering::SeqCst);
            let sent = Instant::now();
            let (status, refusal) = request.send().map_or((0, Refusal::None), |r| {
                let challenge = r
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                (r.status().as_u16(), Refusal::of(challenge))
            });
            let sample = Sample {
                kind,
                sent,
                at: Instant::now(),
                status,
                phase: (sent_phase, self.phase.load(Ordering::SeqCst)),
                refusal,
            };
            self.samples.lock().expect("samples").push(sample);
        }
    }

    fn count(&self) -> usize {
        self.samples.lock().expect("samples").len()
    }

    /// Waits until `f` holds for the samples so far (polled), failing after `deadline`.
    fn wait(&self, what: &str, deadline: Duration, f: impl Fn(&[Sample]) -> bool) {
        let ok = wait_for(deadline, || f(&self.samples.lock().expect("samples")));
        assert!(ok, "load: {what} not seen within {deadline:?}");
    }

    fn finish(&self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

/// A client with a short timeout: a stuck request must show up as a failure, not hang the test.
fn client_fast() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[test]
fn ext_authz_killed_and_restarted_under_load_fails_closed_and_recovers() {
    let mut stack = Stack::start();
    let token = stack.login(&stack.user);
    let forged = format!("{token}x");
    // 0: valid token, 1: no token, 2: a token with a broken signature.
    let tokens = [Some(token), None, Some(forged)];
    let seen = stack.upstream_requests();
    let load = Load::new(&tokens);
    let clients = 4;

    let (kill_to_first_503, recovery) = std::thread::scope(|scope| {
        for c in 0..clients {
            let load = &load;
            scope.spawn(move || load.run(c));
        }
        load.wait("200s before the fault", Duration::from_secs(20), |s| {
            s.iter().filter(|s| s.status == 200).count() >= 50
        });

        let killed = Instant::now();
        stack.kill_ext_authz();
        // After the process is reaped: a request sent from now on cannot reach ext-authz.
        load.phase.store(1, Ordering::SeqCst);
        load.wait(
            "503s while ext-authz is down",
            Duration::from_secs(20),
            |s| {
                s.iter()
                    .filter(|s| s.at > killed && s.status == 503)
                    .count()
                    >= 50
            },
        );
        let first_503 = load
            .samples
            .lock()
            .expect("samples")
            .iter()
            .find(|s| s.at > killed && s.status == 503)
            .map(|s| s.at - killed)
            .expect("a 503");

        let restarted = Instant::now();
        load.phase.store(2, Ordering::SeqCst);
        stack.restart_ext_authz();
        load.wait("a 200 after the restart", Duration::from_secs(20), |s| {
            s.iter().any(|s| s.at > restarted && s.status == 200)
        });
        let recovery = load
            .samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| s.at > restarted && s.status == 200)
            .map(|s| s.at - restarted)
            .min()
            .expect("a 200");
        let before = load.count();
        load.wait("more load after recovery", Duration::from_secs(20), |s| {
            s.len() >= before + 100
        });
        load.stop.store(true, Ordering::SeqCst);
        (first_503, recovery)
    });
    let samples = load.finish();

    let mut ok = 0u64;
    let mut unavailable = 0;
    for s in &samples {
        match (s.kind, s.status) {
            (0, 200) => ok += 1,
            (_, 503) => unavailable += 1,
            (1 | 2, 401) => {}
            (0, 401) => panic!("a valid token was refused: {s:?}"),
            _ => panic!("unexpected answer {s:?}"),
        }
        // Fail closed: while ext-authz was down (sent and answered in phase 1), nothing but 503.
        if s.phase == (1, 1) {
            assert_eq!(s.status, 503, "answered while ext-authz was down: {s:?}");
        }
    }
    assert_eq!(
        stack.upstream_requests() - seen,
        ok,
        "the upstream saw more requests than valid-token 200s"
    );
    println!(
        "ext-authz kill/restart under load: {} requests from {clients} clients, {ok} allowed, \
         {unavailable} answered 503; first 503 {:?} after the kill; first 200 {:?} after the \
         restart began (process start + Envoy reconnect)",
        samples.len(),
        kill_to_first_503,
        recovery
    );
    assert!(unavailable >= 50);
    assert!(recovery < Duration::from_secs(20));
}

/// The `kid` of a token's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON header");
    json["kid"].as_str().unwrap_or("").to_owned()
}

#[test]
fn key_rotation_under_load_never_refuses_a_token_whose_key_is_present() {
    let mut stack = Stack::start();
    let old = stack.login(&stack.user);
    assert_eq!(kid_of(&old), KID);
    let c = claims_json(&old);
    let (sub, email) = (
        c["sub"].as_str().expect("sub").to_owned(),
        c["email"].as_str().expect("email").to_owned(),
    );
    let new_kid = "e2e-2";
    let new_secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let new_key = auth_token::Key::new(new_kid, new_secret.as_bytes()).expect("test key");
    let new = mint(&new_key, &sub, &email, &[], now(), Duration::from_secs(600));
    let report = rotate_under_load(
        &mut stack,
        [&old, &new],
        |s| s.refusal == Refusal::UnknownKey,
        |stack| stack.write_key(new_kid, &new_secret),
        |stack| stack.restart_login_service_with(&["--signing-kid", new_kid]),
        |stack| stack.remove_key(KID),
    );
    assert_eq!(kid_of(&report.fresh), new_kid);
    println!(
        "key rotation under load: {} requests; new key live {:?} after the file appeared, old \
         key refused {:?} after removal (reload interval 1 s)",
        report.requests, report.new_live, report.old_gone
    );
}

/// What [`rotate_under_load`] saw.
struct Rotation {
    /// Requests the load made.
    requests: usize,
    /// From writing the new key until a token of it was allowed.
    new_live: Duration,
    /// From removing the old key until its token was refused.
    old_gone: Duration,
    /// A token login-service issued after `sign_with_new`.
    fresh: String,
}

/// The rotation both key-rotation tests drive, under three clients' load of `[old, new]`:
/// 1. `add_new` (the gateway can verify `new`), then `sign_with_new` (login-service signs with
///    it); 2. `remove_old`. Asserts that the old token is allowed whenever its key was present for
///    the whole request and refused only for `refusal_ok`'s reason after, and that the new token
///    is refused only before its key was first loaded (for that reason) and never afterwards.
fn rotate_under_load(
    stack: &mut Stack,
    [old, new]: [&str; 2],
    refusal_ok: impl Fn(&Sample) -> bool,
    add_new: impl FnOnce(&mut Stack),
    sign_with_new: impl FnOnce(&mut Stack),
    remove_old: impl FnOnce(&mut Stack),
) -> Rotation {
    // 0: old key's token, 1: new key's token.
    let tokens = [Some(old.to_owned()), Some(new.to_owned())];
    let load = Load::new(&tokens);
    let probe = client_fast();
    let status = |token: &str| {
        probe
            .get(format!("{ENVOY}/probe"))
            .bearer(token)
            .send()
            .map_or(0, |r| r.status().as_u16())
    };

    let (new_live, old_gone, fresh) = std::thread::scope(|scope| {
        for c in 0..3 {
            let load = &load;
            scope.spawn(move || load.run(c));
        }
        load.wait("old-key 200s", Duration::from_secs(20), |s| {
            s.iter().filter(|s| s.status == 200).count() >= 30
        });
        // 1: the new key is added next to the old one, then signing switches to it.
        let added = Instant::now();
        load.phase.store(1, Ordering::SeqCst);
        add_new(stack);
        assert!(
            wait_for(Duration::from_secs(10), || status(new) == 200),
            "the new key was never loaded"
        );
        let new_live = added.elapsed();
        sign_with_new(stack);
        let fresh = stack.login(&stack.user);
        assert_eq!(status(&fresh), 200);
        // 2: the old key is removed.
        let removed = Instant::now();
        load.phase.store(2, Ordering::SeqCst);
        remove_old(stack);
        assert!(
            wait_for(Duration::from_secs(10), || status(old) == 401),
            "the old key was never unloaded"
        );
        let old_gone = removed.elapsed();
        let before = load.count();
        load.wait("load after the rotation", Duration::from_secs(20), |s| {
            s.len() >= before + 60
        });
        load.stop.store(true, Ordering::SeqCst);
        (new_live, old_gone, fresh)
    });
    let samples = load.finish();

    let new_first_ok = samples
        .iter()
        .filter(|s| s.kind == 1 && s.status == 200)
        .map(|s| s.at)
        .min()
        .expect("the new token was accepted under load");
    for s in &samples {
        match s.kind {
            // The old token: accepted whenever its key was present for the whole request;
            // refused only once it was removed.
            0 if s.phase.1 < 2 => assert_eq!(s.status, 200, "old token refused: {s:?}"),
            0 => assert!(
                s.status == 200 || (s.status == 401 && refusal_ok(s)),
                "{s:?}"
            ),
            // The new token: refused only before its key was first loaded; never afterwards.
            // Why `sent`: a request sent before the reload may be answered (refused) after
            // another client's first 200 arrived; only one sent after that 200 must pass.
            _ if s.sent > new_first_ok || s.phase.0 == 2 => {
                assert_eq!(
                    s.status, 200,
                    "new token refused after its key was live: {s:?}"
                );
            }
            _ => assert!(
                s.status == 200 || (s.status == 401 && refusal_ok(s)),
                "{s:?}"
            ),
        }
    }
    assert_eq!(status(&fresh), 200);
    Rotation {
        requests: samples.len(),
        new_live,
        old_gone,
        fresh,
    }
}

#[test]
fn login_service_sigterm_lets_in_flight_logins_finish() {
    let mut stack = Stack::start();
    let user = stack.user.clone();
    let baseline = stack.envoy_stat("cluster.login_service.upstream_rq_total");
    let reached_before = logins_reached();
    let n: u64 = 24;
    let results: Mutex<Vec<(u16, String, Instant)>> = Mutex::new(Vec::new());

    let (terminated_at, exit) = std::thread::scope(|scope| {
        for _ in 0..n {
            let (user, results) = (&user, &results);
            scope.spawn(move || {
                let reply = client_fast()
                    .post(format!("{ENVOY}/login"))
                    .timeout(Duration::from_secs(30))
                    .basic_auth(&user.email, Some(&user.password))
                    .send();
                let (status, body) = match reply {
                    Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                results
                    .lock()
                    .expect("results")
                    .push((status, body, Instant::now()));
            });
        }
        // Every login is inside login-service's handler (its own gauge, not Envoy's upstream
        // count: Envoy counts a request when it picks a connection, which may still be in
        // login-service's accept backlog, and a backlog is reset at SIGTERM): SIGTERM now.
        let start = Instant::now();
        while stack.envoy_stat("cluster.login_service.upstream_rq_total") < baseline + n
            || logins_reached() < reached_before + n
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the logins never reached login-service"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let terminated_at = Instant::now();
        let exit = stack.terminate_login_service(Duration::from_secs(20));
        (terminated_at, exit)
    });
    assert!(exit.success(), "login-service exit after SIGTERM: {exit}");

    let results = results.into_inner().expect("results");
    let after = results.iter().filter(|r| r.2 > terminated_at).count();
    for (status, body, _) in &results {
        assert_eq!(*status, 200, "an in-flight login was not completed: {body}");
        let token = serde_json::from_str::<serde_json::Value>(body).expect("JSON")["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        let reply = stack
            .get("/after-drain")
            .bearer(&token)
            .send()
            .expect("GET");
        assert_eq!(reply.status(), 200);
    }
    println!(
        "login-service SIGTERM: {n} logins in flight, {after} completed after the signal, all 200"
    );
    assert!(after > 0, "no login was still in flight at SIGTERM");
    // Down now (Envoy answers 503), and back after a restart.
    let reply = stack.post_login(&user.email, &user.password);
    assert_eq!(reply.status(), 503);
    stack.restart_login_service_with(&[]);
    stack.login(&user);
}

/// Logins that reached login-service's handler: answered (`login_attempts_total`, every
/// outcome) plus in flight (`login_in_flight`), from its own `/metrics`; 0 when unreadable.
fn logins_reached() -> u64 {
    let Some(text) = client_fast()
        .get("http://127.0.0.1:5000/metrics")
        .send()
        .and_then(|r| r.text())
        .ok()
    else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("login_attempts_total{") || l.starts_with("login_in_flight "))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Issue #12: rotation from HS256 to EdDSA under load, the documented walkthrough
/// (login-service/README.md "Rotating from HS256 to EdDSA"): the gateway gains the Ed25519
/// PUBLIC key, login-service switches its signing kid to the private key, the gateway drops the
/// HMAC secret. No token is refused while its key is present, and the gateway ends with public
/// key files only.
#[test]
fn rotation_from_hs256_to_eddsa_under_load_never_refuses_a_token_whose_key_is_present() {
    let mut stack = Stack::start();
    // The gateway gets its own keys directory (today: the HS256 secret only).
    let secret = stack.key_secret().to_owned();
    stack.split_gateway_keys(&[(KID, &secret)]);
    let old = stack.login(&stack.user);
    assert_eq!(kid_of(&old), KID);
    let c = claims_json(&old);
    let (sub, email) = (
        c["sub"].as_str().expect("sub").to_owned(),
        c["email"].as_str().expect("email").to_owned(),
    );
    let ed_kid = "e2e-ed";
    let (private, public) = auth_token::testing::ed25519_pem_pair();
    let ed_key = auth_token::Key::ed25519_private_pem(ed_kid, private.as_bytes()).expect("key");
    let new = mint(&ed_key, &sub, &email, &[], now(), Duration::from_secs(600));
    let report = rotate_under_load(
        &mut stack,
        [&old, &new],
        // Across algorithms the reason is "unsupported algorithm" while the ring holds no key of
        // the token's algorithm (EdDSA before, HS256 after), "unknown signing key" otherwise;
        // any other reason (a bad signature, a mismatch) is a wrong refusal.
        |s| {
            matches!(
                s.refusal,
                Refusal::UnknownKey | Refusal::UnsupportedAlgorithm
            )
        },
        // The gateway gains the public key; login-service the private key.
        |stack| stack.write_gateway_key(&format!("{ed_kid}.pub.pem"), &public),
        |stack| {
            stack.write_key(&format!("{ed_kid}.pem"), &private);
            stack.restart_login_service_with(&["--signing-kid", ed_kid]);
        },
        // Step 4: the gateway drops the HMAC secret, and so does login-service.
        |stack| {
            stack.remove_gateway_key(KID);
            stack.remove_key(KID);
        },
    );
    assert_eq!(kid_of(&report.fresh), ed_kid);
    // Logins after the walkthrough: EdDSA tokens, accepted by a gateway without any secret.
    let after = stack.login(&stack.user);
    assert_eq!(kid_of(&after), ed_kid);
    assert_eq!(
        Reply::of(stack.get("/after-rotation").bearer(&after)).status,
        200
    );
    // The gateway ends with public keys only.
    let files: Vec<String> = std::fs::read_dir(stack.gateway_keys_dir())
        .expect("gateway keys dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(files, [format!("{ed_kid}.pub.pem")]);
    println!(
        "HS256 -> EdDSA rotation under load: {} requests; public key live {:?} after the file \
         appeared, HS256 refused {:?} after removal",
        report.requests, report.new_live, report.old_gone
    );
}
