-- Issue #17 review (M1): a login keeps at most REFRESH_MAX_SESSIONS families per user; it
-- finds them by their unused row (one per live family), newest first. The cleanup deletes the
-- rows of ended families by `revoked_at`.
CREATE INDEX refresh_token_user_tip ON refresh_token (user_id, used_at, id);
CREATE INDEX refresh_token_revoked_at ON refresh_token (revoked_at);
