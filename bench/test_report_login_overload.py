"""Tests of bench/report.py's login-overload section and target row (issue #15 §3; stdlib
unittest, `make unit` runs them): the ratio is to one verify of the same run, and a time-out or
a p99 over 4 verifies is "missed"."""
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402


def rows(p99_us, timeouts=0):
    return [
        {"kind": "argon2", "single_verify_ms": 30.0},
        {"kind": "login_overload", "calibrate_clients": 2, "calibrate_s": 10.0,
         "sustainable_rps": 60.0, "factor": 2.0, "duration_s": 20, "offered_rps": 120.0,
         "sent": 2400, "accepted": 1180, "accepted_rps": 59.0, "accepted_p50_us": 70_000,
         "accepted_p99_us": p99_us, "accepted_max_us": 130_000, "shed": 1220,
         "shed_p50_us": 900, "shed_p99_us": 2_000, "shed_without_retry_after": 0,
         "other": 0, "timeouts": timeouts, "errors": 0, "timeout_s": 10,
         "server_verify_ms_after_overload": 40.0, "server_cpu_us_per_answer": 16_000.0,
         "login_after_burst": 200},
    ]


class LoginOverloadTest(unittest.TestCase):
    def test_target_is_p99_over_one_verify_and_no_timeouts(self):
        [(name, value, met)] = report.targets_login_overload(rows(110_000))
        self.assertEqual(name, "accepted logins p99 ≤ 4 × one verify under 2× load, 0 timeouts")
        self.assertTrue(met)
        self.assertIn("3.67×", value)
        self.assertIn("0 timeouts", value)
        self.assertFalse(report.targets_login_overload(rows(121_000))[0][2])
        self.assertFalse(report.targets_login_overload(rows(50_000, timeouts=1))[0][2])

    def test_section_shows_offered_accepted_and_shed(self):
        text = "\n".join(report.section_login_overload(rows(110_000)))
        self.assertIn("| offered: open loop for 20 s | 120.0 logins/s (2400 sent) |", text)
        self.assertIn("59.0 logins/s (1180; 49% of offered, 98% of sustainable)", text)
        self.assertIn("| shed: 503 `overloaded` | 1220 (0 without `Retry-After`)", text)
        self.assertIn("30.0 ms · 3.67×", text)

    def test_nothing_without_the_step(self):
        self.assertEqual(report.section_login_overload([]), [])
        self.assertEqual(report.targets_login_overload(rows(1)[1:]), [])


if __name__ == "__main__":
    unittest.main()
