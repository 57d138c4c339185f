-- Account state for login-service. Existing seed rows get: not admin, enabled, no failures.
-- Their `password` column still holds the seed's plaintext, which never verifies (see README).
ALTER TABLE `user`
  ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE,
  ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE,
  ADD COLUMN failed_logins INT NOT NULL DEFAULT 0,
  ADD COLUMN locked_until DATETIME NULL,
  ADD COLUMN created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  ADD COLUMN updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  ADD COLUMN password_changed_at DATETIME NULL;
