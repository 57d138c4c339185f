-- Refresh tokens (issue #17): one row per refresh token ever issued, until the cleanup deletes
-- it after `expires_at`. Only `token_hash` (SHA-256 hex of the token: it carries 256 random
-- bits, so a fast hash is enough) is stored, never the token. A login starts a family
-- (`family_id`, random); each rotation marks its row used (`used_at`, set by a conditional
-- UPDATE ... WHERE used_at IS NULL: the database decides which of two concurrent refreshes
-- wins) and inserts the next row of the family with `generation` + 1. A used row presented
-- again revokes the family (`revoked_at` on every row) and the access tokens issued with it
-- (`access_jti` until `access_exp`) through the revocation feed. Times are Unix seconds.
CREATE TABLE refresh_token (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  token_hash CHAR(64) NOT NULL,
  family_id CHAR(32) NOT NULL,
  user_id INT NOT NULL,
  generation INT NOT NULL,
  auth_time BIGINT NOT NULL,
  session_expires_at BIGINT NOT NULL,
  issued_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT NULL,
  revoked_at BIGINT NULL,
  access_jti VARCHAR(64) NOT NULL,
  access_exp BIGINT NOT NULL,
  UNIQUE INDEX refresh_token_hash (token_hash),
  INDEX refresh_token_family (family_id),
  INDEX refresh_token_user (user_id),
  INDEX refresh_token_access_jti (access_jti),
  INDEX refresh_token_expires_at (expires_at)
);
