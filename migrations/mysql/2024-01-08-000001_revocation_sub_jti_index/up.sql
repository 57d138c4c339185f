-- Issue #15 §2 (1,000,000 outstanding revocations): a logout's per-user queries ask for one
-- user's cuts (`jti IS NULL`) or tokens (`jti IS NOT NULL`). With `sub` alone indexed, a
-- planner holding statistics may take the `jti` index for `jti IS NULL` instead (SQLite does
-- after ANALYZE) and walk every user-wide cut in the table. `(sub, jti)` answers both from one
-- user's rows; it also serves every lookup by `sub` alone, so it replaces `revocation_sub`.
CREATE INDEX revocation_sub_jti ON revocation (sub, jti);
DROP INDEX revocation_sub ON revocation;
