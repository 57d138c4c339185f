DROP INDEX refresh_token_user_tip ON refresh_token;
