"""Tests of bench/report.py's framework-floor section and targets (issue #15 §1; stdlib
unittest, `make unit` runs them): Check lines are paired with the health lines of the same step
and server, ratios are rounded up (never in our favour), and each target is judged unrounded."""
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402


def line(kind, step, p50, p99, cpu, label="pinned"):
    return {"kind": kind, "label": label, "step": step, "p50_us": p50, "p99_us": p99,
            "server_cpu_us_per_check": cpu, "connections": 4, "achieved_rps": 1000.0,
            "target_rps": None if step == "max" else int(step), "errors": 0, "p90_us": p50,
            "p999_us": p99, "max_us": p99, "pacer_p50_us": 1.0, "pacer_p99_us": 2.0}


RUN = [
    line("grpc", "1000", 60.0, 200.0, 30.0), line("grpc_floor", "1000", 50.0, 150.0, 25.0),
    line("grpc", "max", 900.0, 1500.0, 10.41), line("grpc_floor", "max", 800.0, 1400.0, 8.0),
    # The unpinned server has no floor: never paired.
    line("grpc", "max", 700.0, 1200.0, 19.0, label="not pinned"),
]


class CheckFloorTest(unittest.TestCase):
    def test_pairs_only_steps_of_the_floored_server(self):
        pairs = report.floor_pairs(RUN)
        self.assertEqual([s for s, _, _ in pairs], ["1000", "max"])
        self.assertTrue(all(c["label"] == "pinned" for _, c, _ in pairs))

    def test_targets_are_judged_unrounded_and_shown_rounded_up(self):
        rows = {name: (value, met) for name, value, met in report.targets_check_floor(RUN)}
        # 10.41 / 8.0 = 1.30125: over 1.3, shown as 1.31×, missed.
        value, met = rows["ext-authz CPU/check ≤ 1.3× health (framework floor), max step"]
        self.assertFalse(met)
        self.assertTrue(value.startswith("1.31×"), value)
        self.assertEqual(rows["ext-authz CPU/check ≤ 8 µs at saturation"], ("10.5 µs", False))
        # 60 / 50 = 1.2: met.
        value, met = rows["Check ÷ health p50 ≤ 1.25× at 1,000/s"]
        self.assertTrue(met)
        self.assertTrue(value.startswith("1.20×"), value)

    def test_exactly_at_the_target_is_met(self):
        run = [line("grpc", "max", 1, 1, 10.4), line("grpc_floor", "max", 1, 1, 8.0)]
        (name, value, met), _ = report.targets_check_floor(run)
        self.assertTrue(met, value)

    def test_table_has_a_row_per_step_and_nothing_without_a_floor(self):
        table = "\n".join(report.section_check_floor(RUN))
        self.assertIn("| 1,000/s | 60 µs / 50 µs | 1.20× | 200 µs / 150 µs | 1.34× "
                      "| 30.0 / 25.0 | 1.20× |", table)
        self.assertIn("| max (closed loop) |", table)
        self.assertEqual(report.section_check_floor([line("grpc", "max", 1, 1, 1)]), [])
        self.assertEqual(report.targets_check_floor([line("grpc", "max", 1, 1, 1)]), [])

    def test_render_keeps_todays_rows_and_adds_the_floor_rows(self):
        md = report.render(RUN, {})
        self.assertIn("ext-authz CPU/check ≤ 20 µs at saturation (direct, max step)", md)
        self.assertIn("ext-authz CPU/check ≤ 1.3× health (framework floor), max step", md)
        self.assertIn("### Check vs the framework floor", md)


if __name__ == "__main__":
    unittest.main()
