DROP INDEX refresh_token_revoked_at;
DROP INDEX refresh_token_user_tip;
