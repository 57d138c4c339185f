CREATE INDEX revocation_sub ON revocation (sub);
DROP INDEX revocation_sub_jti;
