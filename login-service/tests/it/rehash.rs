//! README, "Passwords": "When a stored hash uses other parameters (or argon2i/argon2d), a
//! successful login rehashes the password with the current parameters and stores it" (issue #20).

use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::helpers::{TestDb, db_test, spawn_app};

/// A PHC string for `password` made by the argon2 crate itself (not our code) with `algorithm`,
/// `version` and `params`.
fn foreign_hash(password: &str, algorithm: Algorithm, version: Version, params: Params) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).unwrap();
    Argon2::new(algorithm, version, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

async fn older_argon2_hashes_are_upgraded_on_login(db: TestDb) {
    let app = spawn_app(db).await;
    let owasp = login_service::password::owasp_params();
    let old = Params::new(65_536, 3, 4, None).unwrap();
    let cases = [
        ("argon2i", Algorithm::Argon2i, Version::V0x13, owasp.clone()),
        ("argon2d", Algorithm::Argon2d, Version::V0x13, owasp.clone()),
        ("argon2id-v16", Algorithm::Argon2id, Version::V0x10, owasp),
        (
            "argon2id-old-params",
            Algorithm::Argon2id,
            Version::V0x13,
            old,
        ),
    ];
    for (i, (name, algorithm, version, params)) in cases.into_iter().enumerate() {
        let email = format!("{name}@example.com");
        let pw = format!("pw of {name}");
        let stored = foreign_hash(&pw, algorithm, version, params);
        assert!(
            !stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        app.insert_raw(&email, &stored, false).await;
        let ip = format!("198.51.100.{}", 70 + i);

        // A wrong password changes nothing.
        let r = app.login(&email, "wrong", &ip).await;
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(app.user(&email).await.unwrap().password, stored, "{name}");

        // The right one logs in and stores a current argon2id hash of the same password.
        let r = app.login(&email, &pw, &ip).await;
        assert_eq!(r.status(), 200, "{name}");
        let upgraded = app.user(&email).await.unwrap().password;
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{name}: not upgraded: {upgraded}"
        );
        assert_eq!(
            login_service::password::verify_with(
                Some(&upgraded),
                &upgraded,
                pw.as_bytes(),
                &login_service::password::owasp_params(),
            ),
            login_service::password::Verification::Match {
                needs_rehash: false
            },
            "{name}"
        );
        // And it is stable: the next login neither fails nor rewrites it.
        let r = app.login(&email, &pw, &ip).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(app.user(&email).await.unwrap().password, upgraded, "{name}");
    }
}
db_test!(older_argon2_hashes_are_upgraded_on_login);
