DROP INDEX refresh_token_user_tip;
