//! The login decision called directly ([`login_service::login::authenticate`]): no HTTP
//! server, no client, the same state and database the server would use.

use std::net::IpAddr;
use std::sync::Arc;

use auth_token::{Verifier, VerifierConfig};
use login_service::credentials::Credentials;
use login_service::login::{LoginError, authenticate};
use login_service::state::AppState;
use login_service::{password, users};
use secrecy::SecretString;

use crate::helpers::{TestDb, db_test, keyring, settings};

/// The server's state over a migrated test database, without a server.
struct Decider {
    state: Arc<AppState>,
    _db: TestDb,
}

impl Decider {
    async fn new(db: TestDb) -> Self {
        let s = settings(&db);
        let state = tokio::task::spawn_blocking(move || login_service::server::build_state(s))
            .await
            .unwrap()
            .expect("build state");
        Self { state, _db: db }
    }

    async fn add_user(&self, email: &str, pw: &str) -> i32 {
        let hash = password::hash_with(pw.as_bytes(), password::owasp_params()).unwrap();
        let e = email.to_owned();
        self.state
            .db
            .run(move |c| {
                users::insert(c, &e, &hash, false)?;
                users::find_by_email(c, &e)
            })
            .await
            .unwrap()
            .unwrap()
            .id
    }

    async fn login(
        &self,
        email: &str,
        pw: &str,
        client: &str,
    ) -> Result<auth_token::Issued, LoginError> {
        let creds = Credentials {
            email: email.to_owned(),
            password: SecretString::from(pw.to_owned()),
        };
        let client: IpAddr = client.parse().unwrap();
        authenticate(&self.state.login_context(), creds, client).await
    }
}

async fn right_password_issues_a_verifiable_token(db: TestDb) {
    let d = Decider::new(db).await;
    let id = d.add_user("dora@example.com", "open sesame").await;
    let issued = d
        .login(" Dora@Example.com", "open sesame", "198.51.100.20")
        .await
        .expect("token issued");
    assert_eq!(issued.expires_in, 900);
    let claims = Verifier::new(&VerifierConfig::default())
        .verify(&issued.token, &keyring(), auth_token::now_unix())
        .expect("the verifier accepts it");
    assert_eq!(claims, issued.claims);
    assert_eq!(claims.sub, id.to_string());
    assert_eq!(claims.email, "dora@example.com");
}
db_test!(right_password_issues_a_verifiable_token);

async fn wrong_password_unknown_and_disabled_are_one_refusal(db: TestDb) {
    let d = Decider::new(db).await;
    d.add_user("eve@example.com", "right").await;
    d.add_user("off@example.com", "right").await;
    d.state
        .db
        .run(|c| users::set_disabled(c, "off@example.com", true))
        .await
        .unwrap();
    for (email, pw) in [
        ("eve@example.com", "wrong"),
        ("nobody@example.com", "right"),
        ("off@example.com", "right"),
        ("not an e-mail", "right"),
    ] {
        let r = d.login(email, pw, "198.51.100.21").await;
        assert!(
            matches!(r, Err(LoginError::InvalidCredentials)),
            "{email}: {r:?}"
        );
    }
}
db_test!(wrong_password_unknown_and_disabled_are_one_refusal);

async fn locked_after_the_threshold_whatever_the_password(db: TestDb) {
    let d = Decider::new(db).await;
    d.add_user("fred@example.com", "right").await;
    // The test settings lock an e-mail for one address after 3 failures, for 60 s.
    for _ in 0..3 {
        let r = d.login("fred@example.com", "wrong", "198.51.100.22").await;
        assert!(matches!(r, Err(LoginError::InvalidCredentials)), "{r:?}");
    }
    let r = d.login("fred@example.com", "right", "198.51.100.22").await;
    assert!(
        matches!(r, Err(LoginError::Locked { retry_after }) if (1..=60).contains(&retry_after)),
        "{r:?}"
    );
    // Another address is not locked out of the account.
    d.login("fred@example.com", "right", "198.51.100.23")
        .await
        .expect("token from another address");
}
db_test!(locked_after_the_threshold_whatever_the_password);

async fn oversized_user_id_is_refused_first(db: TestDb) {
    let d = Decider::new(db).await;
    let long = format!("{}@example.com", "a".repeat(250));
    let r = d.login(&long, "pw", "198.51.100.24").await;
    assert!(matches!(r, Err(LoginError::UserIdTooLong)), "{r:?}");
}
db_test!(oversized_user_id_is_refused_first);
