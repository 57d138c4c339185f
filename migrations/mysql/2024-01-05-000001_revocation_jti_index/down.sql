DROP INDEX revocation_jti ON revocation;
