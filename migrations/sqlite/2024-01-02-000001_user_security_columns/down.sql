ALTER TABLE "user" DROP COLUMN password_changed_at;
ALTER TABLE "user" DROP COLUMN updated_at;
ALTER TABLE "user" DROP COLUMN created_at;
ALTER TABLE "user" DROP COLUMN locked_until;
ALTER TABLE "user" DROP COLUMN failed_logins;
ALTER TABLE "user" DROP COLUMN disabled;
ALTER TABLE "user" DROP COLUMN is_admin;
