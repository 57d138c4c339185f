-- Failed-login counters shared by every login-service replica (issue #11): one row per key,
-- `key_hash` = SHA-256 hex of a kind-prefixed key (the e-mail as typed, normalised; that e-mail
-- plus the client address; the client address). Known and unknown e-mails use the same rows,
-- so the answers cannot tell them apart. Times are Unix milliseconds. Rows whose lock has ended
-- and whose last failure is older than the reset window are deleted by the cleanup.
CREATE TABLE login_throttle (
  key_hash CHAR(64) NOT NULL PRIMARY KEY,
  failures INTEGER NOT NULL DEFAULT 0,
  locked_until BIGINT NULL,
  last_failure BIGINT NOT NULL
);
CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure);
