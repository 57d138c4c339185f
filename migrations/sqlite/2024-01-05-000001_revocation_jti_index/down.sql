DROP INDEX revocation_jti;
