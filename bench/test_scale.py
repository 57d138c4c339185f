"""Tests of bench/report.py's footprint and revocation-at-scale rendering and of bench/scale_db.py
(stdlib unittest; `make unit` runs them): the targets are judged on the right figures, with no
rounding in our favour, and the query plans of the revocation queries use their indexes on the
schema the migrations build."""
import sqlite3
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402
import scale_db  # noqa: E402


def footprint(rss_max, p50, label="pinned to 1 CPU (sidecar: current-thread runtime), no feed"):
    return {"kind": "footprint", "name": "ext-authz", "label": label, "probe": "grpc.health.v1",
            "runs": 5, "idle_s": 2, "ready_ms_p50": p50, "ready_ms_min": p50 - 1,
            "ready_ms_max": p50 + 30, "rss_kib_p50": rss_max - 10, "rss_kib_max": rss_max,
            "hwm_kib_max": rss_max + 5, "threads": 1}


def replica(name, rss, ready, entries=1_000_000):
    return {"kind": "scale_replica", "replica": name, "feed": True, "entries_loaded": entries,
            "entries_known": entries, "ready_ms": ready, "rss_kib": rss, "hwm_kib": rss + 100,
            "rss_bytes_per_entry": rss * 1024 / entries}


def check(set_, step, cpu, p50, rnd):
    return {"kind": "scale_check", "set": set_, "target_rps": step, "server_cpu_us_per_check": cpu,
            "p50_us": p50, "achieved_rps": 5000, "round": rnd, "entries": 1e6 if set_ == "loaded" else 0}


def logout(p99):
    s = {"p50_ms": 70.0, "p90_ms": 90.0, "p99_ms": p99, "max_ms": p99 + 1}
    return {"kind": "scale_logout", "logouts": 200, "replicas": 2, "entries_loaded": 1_000_000,
            "both": s, "first": s, "replica_a": s, "replica_b": s}


def verdicts(rows):
    return {name.split(" (this run")[0]: (value, flag) for name, value, flag in report.targets_scale(rows)}


class TargetsTest(unittest.TestCase):
    def test_each_target_is_judged_on_its_figure(self):
        rows = [footprint(12 * 1024, 40.0), replica("a", 60 * 1024, 1500), replica("b", 61 * 1024, 1900),
                {"kind": "scale_replica_after", "replica": "a", "entries_known": 1_000_200,
                 "rss_kib": 63 * 1024, "hwm_kib": 70 * 1024},
                logout(100.0)]
        rows += [check("loaded", None, 10.5, 800, r) for r in (1, 2, 3)]
        rows += [check("none", None, 10.0, 790, r) for r in (1, 2, 3)]
        v = verdicts(rows)
        self.assertEqual(v["ext-authz idle RSS ≤ 12 MiB"][1], True)
        self.assertEqual(v["ext-authz SERVING ≤ 100 ms without a feed"][1], True)
        # The largest RSS seen, after the logouts too.
        self.assertEqual(v["ext-authz RSS with 1,000,000 entries ≤ 64 MiB"],
                         ("63.0 MiB (66 B/entry)", True))
        # The slower replica decides.
        self.assertEqual(v["SERVING with the 1M snapshot ≤ 2 s"], ("1.90 s", True))
        self.assertTrue(v["logout → refusal at the edge p99 ≤ 100 ms (two replicas, 1M entries)"][1])
        self.assertEqual(v["check with 1M entries within 5 % of none"][1], True)  # exactly 1.05

    def test_just_over_is_missed(self):
        rows = [footprint(12 * 1024 + 1, 100.1), replica("a", 64 * 1024 + 1, 2001), logout(100.1)]
        rows += [check("loaded", None, 10.51, 800, 1), check("none", None, 10.0, 800, 1)]
        v = verdicts(rows)
        for name, (value, flag) in v.items():
            self.assertFalse(flag, f"{name}: {value}")

    def test_the_check_ratio_is_paired_within_rounds(self):
        # Five rounds of a real run (2026-12-01), the machine speeding up from round to round:
        # per-round ratios 1.05, 1.03, 1.00, 1.05, 0.98, median 1.030; the medians of each set
        # alone (18.3 vs 18.3 µs) would have said 1.000.
        loaded = [(1, 22.4), (2, 20.6), (3, 18.3), (4, 16.4), (5, 16.7)]
        none = [(1, 21.3), (2, 20.0), (3, 18.3), (4, 15.6), (5, 17.1)]
        rows = [check("loaded", None, cpu, 800, r) for r, cpu in loaded]
        rows += [check("none", None, cpu, 800, r) for r, cpu in none]
        value, met = verdicts(rows)["check with 1M entries within 5 % of none"]
        self.assertTrue(value.startswith("1.030 (median of 5 paired rounds"), value)
        self.assertTrue(met)
        # A round whose pair is missing does not count; a dearer loaded set is missed.
        rows = [check("loaded", None, 10.6, 800, 1), check("none", None, 10.0, 800, 1),
                check("loaded", None, 9.0, 800, 2)]
        value, met = verdicts(rows)["check with 1M entries within 5 % of none"]
        self.assertTrue(value.startswith("1.060 (median of 1 paired"), value)
        self.assertFalse(met)
        text = "\n".join(report.section_scale(rows))
        self.assertIn("| 1.060 (1.06) |", text)
        # No round ran both: the ratio of the medians, and it says so.
        rows = [check("loaded", None, 10.4, 800, 1), check("none", None, 10.0, 800, 2)]
        value, met = verdicts(rows)["check with 1M entries within 5 % of none"]
        self.assertTrue(value.startswith("1.040 (ratio of the medians, no paired round"), value)
        self.assertTrue(met)

    def test_quick_runs_say_how_many_entries(self):
        names = [n for n, _, _ in report.targets_scale([replica("a", 30 * 1024, 300, entries=100_000)])]
        self.assertTrue(all("this run: 100,000 entries" in n for n in names), names)

    def test_section_renders_without_every_part(self):
        self.assertEqual(report.section_scale([]), [])
        text = "\n".join(report.section_scale([footprint(9000, 20.0), logout(80.0)]))
        self.assertIn("| ext-authz |", text)
        self.assertIn("**both replicas refuse** (the edge) | 70.0 ms", text)


class PlansTest(unittest.TestCase):
    """The bench's plan check against the schema of migrations/sqlite, small table."""

    def test_revocation_queries_use_their_indexes_on_sqlite(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/t.sqlite"
            db = sqlite3.connect(path)
            for up in sorted((HERE.parent / "migrations" / "sqlite").glob("*/up.sql")):
                db.executescript(up.read_text())
            db.close()
            self.assertEqual(scale_db.sqlite_load(path, 3000), 3000)
            for analyzed in (False, True):
                for plan in scale_db.sqlite_explain(path, analyzed):
                    self.assertTrue(plan["indexed"], (analyzed, plan))

    def test_a_scan_or_a_sort_or_another_index_is_not_indexed(self):
        self.assertFalse(scale_db.sqlite_indexed(["SCAN revocation"], None))
        self.assertFalse(scale_db.sqlite_indexed(
            ["SEARCH revocation USING INDEX revocation_jti (jti=?)"], "revocation_sub_jti"))
        self.assertFalse(scale_db.sqlite_indexed(
            ["SEARCH revocation USING INDEX x", "USE TEMP B-TREE FOR ORDER BY"], None))
        self.assertFalse(scale_db.mysql_indexed([{"type": "ALL", "key": "NULL"}], None))
        self.assertFalse(scale_db.mysql_indexed(
            [{"type": "range", "key": "PRIMARY", "Extra": "Using filesort"}], "PRIMARY"))
        self.assertTrue(scale_db.mysql_indexed(
            [{"type": "ref", "key": "revocation_sub_jti", "Extra": ""}], "revocation_sub_jti"))


if __name__ == "__main__":
    unittest.main()
