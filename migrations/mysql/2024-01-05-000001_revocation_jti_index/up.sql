-- `POST /logout` looks a token up by `jti` (is it revoked already?): without an index that is a
-- full scan of the table on every logout.
CREATE INDEX revocation_jti ON revocation (jti);
