#!/usr/bin/env python3
"""Revocation rows in bulk, and the query plans of login-service's feed queries (issue #15 §2).

  scale_db.py load-sqlite FILE N         N outstanding revocations into a migrated SQLite file
  scale_db.py load-mysql DATABASE N      the same into a migrated MariaDB/MySQL database
  scale_db.py explain-sqlite FILE        JSON lines: the plan of each query, indexed or not
                                         (without statistics, as login-service runs, and
                                         after ANALYZE)
  scale_db.py explain-mysql DATABASE     the same with MariaDB's EXPLAIN

MariaDB is reached with the `mysql` command-line client (MYSQL_HOST, MYSQL_PORT, MYSQL_USER,
MYSQL_PWD as the client reads them; default root@127.0.0.1:3306); SQLite with Python's own
sqlite3 module. Standard library only.

The rows look like login-service's: 90 % single tokens (`jti` = 32 lowercase hex digits, as
login-service's UUIDs; 9 per user), 10 % user-wide cuts (`jti` NULL, one user each, so every
row is one entry in ext-authz's set), all revoked a minute ago and in force for a day. Subs
start at 1,000,000 (cuts at 2,000,000) so they never meet the bench's own tokens.

The queries are the ones login-service's `revocations.rs` runs (diesel's SQL, values bound):
the feed page, the newest id (409 `cursor_ahead` and the cleanup), a logout's `jti` lookup,
the per-user count and cut, and the two deletes. "Indexed" means the plan reads no more than
an index range: no full scan of the table (SQLite `SCAN revocation` without an index, MariaDB
`type` ALL or index) and no sort of the result (`USE TEMP B-TREE`, `Using filesort`).
"""
import json
import os
import sqlite3
import subprocess
import sys
import time

NOW = int(time.time())
FRESH = 1_000_000 + 1  # a `sub` the loaded rows use
# (name, SQL with ? placeholders, values, the index it must use) — the statements of
# login-service/src/revocations.rs. The index: a substring of SQLite's plan and MariaDB's `key`.
PK = ("INTEGER PRIMARY KEY", "PRIMARY")
QUERIES = [
    ("feed page (snapshot: since=0)",
     "SELECT id, sub, jti, revoked_at, expires_at, reason FROM revocation "
     "WHERE id > ? AND expires_at > ? ORDER BY id ASC LIMIT ?", [0, NOW - 300, 10001], PK),
    ("feed page (long poll: since=newest)",
     "SELECT id, sub, jti, revoked_at, expires_at, reason FROM revocation "
     "WHERE id > ? AND expires_at > ? ORDER BY id ASC LIMIT ?", ["NEWEST", NOW - 300, 1001], PK),
    ("newest id", "SELECT MAX(id) FROM revocation", [], None),
    ("logout: jti revoked?", "SELECT id FROM revocation WHERE jti = ? LIMIT 1",
     ["0123456789abcdef0123456789abcdef"], ("revocation_jti", "revocation_jti")),
    ("outstanding tokens of a user",
     "SELECT COUNT(*) FROM revocation WHERE sub = ? AND jti IS NOT NULL AND expires_at > ?",
     [str(FRESH), NOW], ("revocation_sub_jti", "revocation_sub_jti")),
    ("user cut in force",
     "SELECT MAX(revoked_at) FROM revocation WHERE sub = ? AND jti IS NULL AND expires_at > ?",
     [str(FRESH), NOW], ("revocation_sub_jti", "revocation_sub_jti")),
    ("cleanup (expired rows)",
     "DELETE FROM revocation WHERE expires_at <= ? AND id < ?", [NOW - 300, "NEWEST"],
     ("revocation_expires_at", "revocation_expires_at")),
    ("superseded logout cuts",
     "DELETE FROM revocation WHERE sub = ? AND jti IS NULL AND reason IN (?, ?) "
     "AND revoked_at <= ? AND expires_at <= ? AND id < ?",
     [str(FRESH), "logout_all", "logout_limit", NOW, NOW + 86400, "NEWEST"],
     ("revocation_sub_jti", "revocation_sub_jti")),
]


def sqlite_load(path, n):
    db = sqlite3.connect(path)
    # Why one statement: a recursive CTE generates the rows inside SQLite (≈ 1M rows in a few
    # seconds); inserting from Python row by row would take much longer.
    db.execute(
        """WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
           INSERT INTO revocation (sub, jti, revoked_at, expires_at, reason)
           SELECT CASE WHEN x % 10 = 0 THEN CAST(2000000 + x AS TEXT)
                       ELSE CAST(1000000 + x % 100000 AS TEXT) END,
                  CASE WHEN x % 10 = 0 THEN NULL
                       ELSE printf('%016x%016x', x, random() & 9223372036854775807) END,
                  ?, ?, CASE WHEN x % 10 = 0 THEN 'admin' ELSE 'logout' END
           FROM c""", (n, NOW - 60, NOW + 86400))
    db.commit()
    count = db.execute("SELECT COUNT(*) FROM revocation").fetchone()[0]
    db.close()
    return count


def sqlite_explain(path, analyzed):
    """The plans as login-service meets them (no statistics: it never runs ANALYZE), or with
    `analyzed` after ANALYZE on a copy of the statistics (what `PRAGMA optimize` leaves)."""
    db = sqlite3.connect(path)
    if analyzed:
        db.execute("ANALYZE")
    newest = db.execute("SELECT MAX(id) FROM revocation").fetchone()[0] or 0
    plans = []
    for name, sql, values, index in QUERIES:
        values = [newest if v == "NEWEST" else v for v in values]
        rows = db.execute("EXPLAIN QUERY PLAN " + sql, values).fetchall()
        detail = [r[-1] for r in rows]
        plans.append({"query": name, "sql": sql, "plan": detail,
                      "indexed": sqlite_indexed(detail, index and index[0])})
    if analyzed:
        # Leave the file as login-service would find it.
        db.execute("DROP TABLE IF EXISTS sqlite_stat1")
        db.commit()
    db.close()
    return plans


def sqlite_indexed(detail, index):
    """No full scan (a `SCAN revocation` not over an index), no sort of the result, and the
    expected index (`index`, a substring of the plan) when one is named."""
    for step in detail:
        if step.startswith("SCAN ") and " USING " not in step:
            return False
        if "TEMP B-TREE" in step:
            return False
    return index is None or any(index in step for step in detail)


def mysql(database, sql):
    out = subprocess.run(
        ["mysql", "-h", os.environ.get("MYSQL_HOST", "127.0.0.1"),
         "-P", os.environ.get("MYSQL_PORT", "3306"), "-u", os.environ.get("MYSQL_USER", "root"),
         "--batch", "--raw", database, "-e", sql],
        check=True, capture_output=True, text=True).stdout
    lines = out.rstrip("\n").split("\n")
    if not lines or not lines[0]:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def mysql_load(database, n):
    # Why the sequence engine (`seq_1_to_N`, built into MariaDB): the rows are generated by the
    # server in one statement.
    mysql(database, f"""
        INSERT INTO revocation (sub, jti, revoked_at, expires_at, reason)
        SELECT IF(seq % 10 = 0, CAST(2000000 + seq AS CHAR), CAST(1000000 + seq % 100000 AS CHAR)),
               IF(seq % 10 = 0, NULL, LOWER(CONCAT(LPAD(HEX(seq), 16, '0'),
                                                  LPAD(HEX(FLOOR(RAND(seq) * 9007199254740991)), 16, '0')))),
               {NOW - 60}, {NOW + 86400}, IF(seq % 10 = 0, 'admin', 'logout')
        FROM seq_1_to_{int(n)};
        ANALYZE TABLE revocation;""")
    return int(mysql(database, "SELECT COUNT(*) AS n FROM revocation")[0]["n"])


def mysql_literal(v):
    return str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"


def mysql_explain(database):
    newest = int(mysql(database, "SELECT COALESCE(MAX(id), 0) AS n FROM revocation")[0]["n"])
    plans = []
    for name, sql, values, index in QUERIES:
        values = [newest if v == "NEWEST" else v for v in values]
        text = sql
        for v in values:
            text = text.replace("?", mysql_literal(v), 1)
        rows = mysql(database, "EXPLAIN " + text)
        plans.append({"query": name, "sql": sql, "plan": rows,
                      "indexed": mysql_indexed(rows, index and index[1])})
    return plans


def mysql_indexed(rows, index):
    """No full table or index scan (`type` ALL or index), no filesort, and the expected index
    (a prefix of `key`) when one is named."""
    for r in rows:
        if r.get("type") in ("ALL", "index"):
            return False
        if "filesort" in (r.get("Extra") or ""):
            return False
    return index is None or any((r.get("key") or "").startswith(index) for r in rows)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 64
    cmd, target = argv[1], argv[2]
    if cmd in ("load-sqlite", "load-mysql"):
        n = int(argv[3])
        start = time.monotonic()
        count = sqlite_load(target, n) if cmd == "load-sqlite" else mysql_load(target, n)
        print(json.dumps({"kind": "scale_load", "backend": cmd.split("-")[1], "rows": count,
                          "seconds": round(time.monotonic() - start, 2)}))
        return 0 if count >= n else 1
    if cmd == "explain-sqlite":
        for analyzed in (False, True):
            print(json.dumps({"kind": "scale_explain", "backend": "sqlite", "analyzed": analyzed,
                              "plans": sqlite_explain(target, analyzed)}))
        return 0
    if cmd == "explain-mysql":
        print(json.dumps({"kind": "scale_explain", "backend": "mysql", "analyzed": True,
                          "plans": mysql_explain(target)}))
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
