"""Tests of bench/report.py's "shipped config's cost" table and target (issue #15 §4; stdlib
unittest, `make unit` runs them): CPU per request is summed over rounds, differences are taken
against (c) of the same run, and the 3 µs target is judged without rounding in our favour."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


def wrk(config, rnd, requests, envoy_cpu_us, rps=1000.0):
    return {"kind": "wrk", "config": config, "round": rnd, "requests": requests,
            "envoy_cpu_us": envoy_cpu_us, "rps": rps, "non2xx": 0, "connect_errors": 0,
            "read_errors": 0, "write_errors": 0, "timeouts": 0}


class ShippedTest(unittest.TestCase):
    def test_table_differences_are_per_request_over_c_summed_over_rounds(self):
        rows = [wrk("shipped:c-ext_authz_tcp", 1, 1000, 48000), wrk("shipped:c-ext_authz_tcp", 2, 3000, 144000),
                wrk("shipped:c+access_log", 1, 1000, 50000), wrk("shipped:c+access_log", 2, 1000, 51000),
                wrk("shipped:e-shipped", 1, 1000, 53000), wrk("shipped:e-shipped", 2, 1000, 53000),
                {"kind": "shipped_env", "rounds": 2, "duration_s": 8,
                 "loadavg_at_start": "1.0 1.0 1.0", "loadavg_at_end": "2.0 2.0 2.0"}]
        lines = report.section_shipped(rows)
        table = [line for line in lines if line.startswith("| (")]
        # (c) first, then c+FLAG, (e) last.
        self.assertTrue(table[0].startswith("| (c) lean"), table)
        self.assertTrue(table[-1].startswith("| (e) the shipped config"), table)
        # c+access_log: 101000 µs / 2000 requests = 50.5, over (c)'s 48.0: +2.5; per round +2.0, +3.0.
        access = next(line for line in table if "`access_log`" in line)
        self.assertIn("| 50.5 | +2.5 | +2.0 – +3.0 |", access)

    def test_no_c_measurement_renders_nothing(self):
        self.assertEqual(report.section_shipped([wrk("shipped:e-shipped", 1, 10, 500)]), [])

    def test_target_is_met_at_3_us_and_missed_just_above(self):
        met = report.targets_shipped([wrk("c-ext_authz_tcp", 1, 1000, 48000),
                                      wrk("e-shipped", 1, 1000, 51000)])
        self.assertEqual(met, [("shipped config (e) ≤ 3 µs Envoy CPU/request over (c)",
                                "+3.00 µs (51.00 vs 48.00)", True)])
        (name, value, flag), = report.targets_shipped([wrk("c-ext_authz_tcp", 1, 1000, 48000),
                                                      wrk("e-shipped", 1, 1000, 51010)])
        self.assertFalse(flag)
        self.assertEqual(value, "+3.01 µs (51.01 vs 48.00)")
        # Only the main Envoy section's rows count, not bench-shipped's.
        self.assertEqual(report.targets_shipped([wrk("shipped:c-ext_authz_tcp", 1, 10, 480)]), [])


if __name__ == "__main__":
    unittest.main()
