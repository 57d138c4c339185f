//! The database schema as diesel sees it: the result of `migrations/{mysql,sqlite}`, written with
//! portable SQL types so one code path serves both backends.

diesel::table! {
    /// Accounts: the seed's `user` table plus login-service's account-state columns.
    user (id) {
        /// Primary key; the token's `sub`.
        id -> Integer,
        /// Trimmed, lower-cased e-mail address; unique.
        email -> Text,
        /// Argon2id PHC string (a seed row may still hold plaintext, which never verifies).
        password -> Text,
        /// Grants the `admin` role.
        is_admin -> Bool,
        /// A disabled account cannot log in (answered like a wrong password).
        disabled -> Bool,
        /// Consecutive failed logins (reset by a success or after the reset window).
        failed_logins -> Integer,
        /// UTC instant until which the account is locked.
        locked_until -> Nullable<Timestamp>,
        /// UTC creation time.
        created_at -> Timestamp,
        /// UTC time of the last change (also the clock of the failure window).
        updated_at -> Timestamp,
        /// UTC time the password was last set through the CLI.
        password_changed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Token revocations (one token by `jti`, or all of a user's tokens issued up to a time);
    /// the source of the `GET /revocations` feed.
    revocation (id) {
        /// Feed cursor: increasing, never reused.
        id -> BigInt,
        /// The user id (`sub` of the tokens).
        sub -> Text,
        /// The revoked token's `jti`; NULL for a user-wide revocation.
        jti -> Nullable<Text>,
        /// Unix seconds of the revocation; user-wide: tokens with `iat <= revoked_at` are revoked.
        revoked_at -> BigInt,
        /// Unix seconds after which the row covers no valid token any more.
        expires_at -> BigInt,
        /// Why: `logout`, `logout_all`, `password`, `disabled`, `removed`, `admin`.
        reason -> Text,
    }
}

diesel::table! {
    /// Failed-login counters shared by the replicas ([`crate::lockout`]): per e-mail, per
    /// e-mail and client address, per client address.
    login_throttle (key_hash) {
        /// SHA-256 hex of the kind-prefixed key; never the raw e-mail or address.
        key_hash -> Text,
        /// Consecutive failures (forgotten after the reset window without a new one).
        failures -> Integer,
        /// Unix milliseconds until which the key is locked.
        locked_until -> Nullable<BigInt>,
        /// Unix milliseconds of the last counted failure (or of the row's creation).
        last_failure -> BigInt,
    }
}

diesel::table! {
    /// Refresh tokens ([`crate::refresh`], issue #17): one row per token issued, only its hash.
    refresh_token (id) {
        /// Row id.
        id -> BigInt,
        /// SHA-256 hex of the token; unique.
        token_hash -> Text,
        /// The family (one login and every rotation descended from it), random hex.
        family_id -> Text,
        /// The account (`user.id`, the tokens' `sub`).
        user_id -> Integer,
        /// 0 for the login's token, +1 per rotation.
        generation -> Integer,
        /// Unix seconds of the login that started the family.
        auth_time -> BigInt,
        /// Unix seconds after which no token of the family refreshes (absolute session end).
        session_expires_at -> BigInt,
        /// Unix seconds this token (and its access token) was issued.
        issued_at -> BigInt,
        /// Unix seconds after which this token no longer refreshes.
        expires_at -> BigInt,
        /// Unix seconds it was used (rotated); NULL while unused.
        used_at -> Nullable<BigInt>,
        /// Unix seconds its family was ended (reuse, logout, account change); NULL while alive.
        revoked_at -> Nullable<BigInt>,
        /// `jti` of the access token issued together with this refresh token.
        access_jti -> Text,
        /// `exp` of that access token.
        access_exp -> BigInt,
    }
}
