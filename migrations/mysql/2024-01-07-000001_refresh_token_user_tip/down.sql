DROP INDEX refresh_token_revoked_at ON refresh_token;
DROP INDEX refresh_token_user_tip ON refresh_token;
