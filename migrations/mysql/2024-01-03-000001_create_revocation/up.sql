-- Token revocations, followed by every ext-authz replica through `GET /revocations`.
-- `id` is the feed cursor: monotonically increasing, never reused (the cleanup always keeps the
-- newest row, so even a server that recomputes AUTO_INCREMENT from MAX(id) cannot reuse one).
-- `jti` set: that one token is revoked. `jti` NULL: every token of `sub` with iat <= revoked_at.
-- Times are Unix seconds. Rows are deleted some time after `expires_at` (the cleanup).
CREATE TABLE revocation (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  sub VARCHAR(255) NOT NULL,
  jti VARCHAR(255) NULL,
  revoked_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  reason VARCHAR(32) NOT NULL,
  INDEX revocation_sub (sub),
  INDEX revocation_expires_at (expires_at)
);
