"""Tests of bench/charts.py and the chart embeds of bench/report.py (stdlib unittest; `make unit`
runs them): the charts show the run's own numbers, scaled right, and only charts with data are
drawn and embedded."""
import json
import re
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import charts  # noqa: E402
import report  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def wrk(config, rps, rnd):
    return {"kind": "wrk", "config": config, "rps": rps, "round": rnd}


class ChartsTest(unittest.TestCase):
    def test_rps_bars_are_the_median_and_scale_with_it(self):
        rows = [wrk("a-noauth", v, i) for i, v in enumerate([30000, 34000, 32000])]
        rows += [wrk("c-ext_authz_tcp", v, i) for i, v in enumerate([15000, 17000, 16000])]
        root = ET.fromstring(charts.rps_chart(rows))
        bars = {r.find(f"{SVG}title").text.split(":")[0]: float(r.get("width"))
                for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None}
        self.assertEqual(set(bars), {"(a) no auth", "(c) ext-authz TCP"})
        self.assertAlmostEqual(bars["(c) ext-authz TCP"] / bars["(a) no auth"], 16000 / 32000, places=3)
        titles = [t.text for t in root.iter(f"{SVG}title")]
        self.assertIn("(a) no auth: median 32,000 req/s over 3 rounds (range 30,000–34,000)", titles)

    def test_the_committed_run_draws_every_chart_with_its_own_numbers(self):
        rows = [json.loads(line) for line in open(HERE / "results" / "latest.jsonl") if line.strip()]
        with tempfile.TemporaryDirectory() as out:
            self.assertEqual(charts.write_charts(rows, out), ["rps.svg", "latency.svg", "login.svg"])
            latency = ET.parse(Path(out) / "latency.svg").getroot()
            shown = {float(m.group(1).replace(",", ""))
                     for t in latency.iter(f"{SVG}title")
                     for m in [re.search(r" p50 ([\d,.]+) µs", t.text or "")] if m}
            self.assertEqual(shown, {round(r["p50_us"], 1) for r in rows if r["kind"] == "grpc"})
            login = ET.parse(Path(out) / "login.svg").getroot()
            measured = next(r["rps"] for r in rows if r.get("config") == "login")
            self.assertTrue(any(t.text == f"/login measured through Envoy: {measured:,.1f}/s"
                                for t in login.iter(f"{SVG}title")))

    def test_charts_without_data_are_neither_drawn_nor_embedded(self):
        # One Envoy measurement of the committed run, nothing else.
        rows = [next(json.loads(line) for line in open(HERE / "results" / "latest.jsonl")
                     if '"config":"b-jwt_authn"' in line)]
        with tempfile.TemporaryDirectory() as out:
            self.assertEqual(charts.write_charts(rows, out), ["rps.svg"])
        text = report.render(rows, {})
        self.assertIn("(bench/results/charts/rps.svg)", text)
        self.assertNotIn("latency.svg", text)
        self.assertNotIn("login.svg", text)

    def test_axis_maximum_is_round_and_covers_the_data(self):
        for value, want in [(34431, 50000), (177.1, 200), (1, 1), (0.3, 0.5), (0, 1.0)]:
            self.assertEqual(charts.nice_max(value), want)
            self.assertGreaterEqual(charts.nice_max(value), value)


if __name__ == "__main__":
    unittest.main()
