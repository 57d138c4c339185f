-- Token revocations, followed by every ext-authz replica through `GET /revocations`.
-- `id` is the feed cursor: AUTOINCREMENT so a deleted id is never handed out again.
-- `jti` set: that one token is revoked. `jti` NULL: every token of `sub` with iat <= revoked_at.
-- Times are Unix seconds. Rows are deleted some time after `expires_at` (the cleanup).
CREATE TABLE revocation (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  sub VARCHAR(255) NOT NULL,
  jti VARCHAR(255) NULL,
  revoked_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  reason VARCHAR(32) NOT NULL
);
CREATE INDEX revocation_sub ON revocation (sub);
CREATE INDEX revocation_expires_at ON revocation (expires_at);
