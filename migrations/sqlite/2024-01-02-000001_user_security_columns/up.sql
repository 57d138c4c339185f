-- Account state for login-service. SQLite's ADD COLUMN needs constant defaults, so the
-- timestamps of existing rows are filled in afterwards.
ALTER TABLE "user" ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE "user" ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE "user" ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "user" ADD COLUMN locked_until TIMESTAMP NULL;
ALTER TABLE "user" ADD COLUMN created_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
ALTER TABLE "user" ADD COLUMN updated_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
ALTER TABLE "user" ADD COLUMN password_changed_at TIMESTAMP NULL;
UPDATE "user" SET created_at = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP;
