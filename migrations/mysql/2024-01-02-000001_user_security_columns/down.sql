ALTER TABLE `user`
  DROP COLUMN password_changed_at,
  DROP COLUMN updated_at,
  DROP COLUMN created_at,
  DROP COLUMN locked_until,
  DROP COLUMN failed_logins,
  DROP COLUMN disabled,
  DROP COLUMN is_admin;
