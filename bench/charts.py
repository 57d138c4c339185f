#!/usr/bin/env python3
"""Draws scripts/bench.sh's results as SVG charts for BENCHMARKS.md (issue #14, "Pictures").

  charts.py RESULTS.jsonl OUT_DIR     writes OUT_DIR/{rps,latency,login}.svg

From the same raw lines report.py turns into tables (so a chart never shows another run's data):
  rps.svg      req/s through Envoy per configuration: the median over rounds, the per-round range
               as a whisker
  latency.svg  the direct Check latency ladder: p50, p99, p99.9 per load step (log scale), one
               panel per ext-authz setup
  login.svg    /login req/s under a burst against the argon2id ceiling
Standard library only (like report.py and envoy/render.py): the SVG is written by hand, each
mark with a <title> holding its exact value, so a reader hovering a bar sees the number.
"""
import json
import math
import statistics
import sys
from pathlib import Path
from xml.sax.saxutils import escape

# The configurations of BENCHMARKS.md's first table, in its order (report.py NAMES).
CONFIGS = [
    ("a-noauth", "(a) no auth"),
    ("b-jwt_authn", "(b) jwt_authn"),
    ("c-ext_authz_tcp", "(c) ext-authz TCP"),
    ("c2-ext_authz_tcp_allowlist", "(c′) TCP + allowed_headers"),
    ("d-ext_authz_uds", "(d) ext-authz UDS"),
    ("e-shipped", "(e) shipped config"),
]
PERCENTILES = [("p50_us", "p50", "#4c78a8"), ("p99_us", "p99", "#f58518"),
               ("p999_us", "p99.9", "#e45756")]
FONT = 'font-family="sans-serif" font-size="12"'


class Svg:
    """A fixed-size SVG canvas collecting elements."""

    def __init__(self, width, height, title):
        self.width, self.height, self.parts = width, height, []
        self.text(width / 2, 20, title, anchor="middle", size=14, weight="bold")

    def text(self, x, y, s, anchor="start", size=12, weight="normal", fill="#222"):
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" '
                          f'font-family="sans-serif" font-size="{size}" font-weight="{weight}" '
                          f'fill="{fill}">{escape(str(s))}</text>')

    def rect(self, x, y, w, h, fill, title):
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" '
                          f'height="{max(h, 0):.1f}" fill="{fill}"><title>{escape(title)}</title></rect>')

    def line(self, x1, y1, x2, y2, stroke="#222", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                          f'stroke="{stroke}" stroke-width="{width}"{d}/>')

    def circle(self, x, y, fill, title):
        self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}">'
                          f'<title>{escape(title)}</title></circle>')

    def render(self):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" {FONT}>\n'
                f'<rect width="100%" height="100%" fill="white"/>\n'
                + "\n".join(self.parts) + "\n</svg>\n")


def nice_max(value):
    """A round axis maximum at or above `value` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    return next(m * exp for m in (1, 2, 5, 10) if m * exp >= value)


def rps_chart(rows):
    """Horizontal bars: median req/s per configuration, whisker from the slowest to the fastest
    round. None when the run has no Envoy measurement."""
    runs = {cfg: [r["rps"] for r in rows if r.get("kind") == "wrk" and r.get("config") == cfg]
            for cfg, _ in CONFIGS}
    shown = [(cfg, name, runs[cfg]) for cfg, name in CONFIGS if runs[cfg]]
    if not shown:
        return None
    left, right, top, bar, gap = 190, 40, 40, 22, 12
    width = 720
    height = top + len(shown) * (bar + gap) + 40
    svg = Svg(width, height, "Requests/s through Envoy (median of rounds; whisker: per-round range)")
    top_value = nice_max(max(max(v) for _, _, v in shown))
    scale = (width - left - right) / top_value
    axis_y = top + len(shown) * (bar + gap)
    for i in range(6):
        v = top_value * i / 5
        x = left + v * scale
        svg.line(x, top - 4, x, axis_y, stroke="#ddd")
        svg.text(x, axis_y + 16, f"{v:,.0f}", anchor="middle", size=11)
    for i, (cfg, name, values) in enumerate(shown):
        y = top + i * (bar + gap)
        med = statistics.median(values)
        fill = "#9ecae9" if cfg[0] in "ab" else "#4c78a8"
        svg.rect(left, y, med * scale, bar, fill,
                 f"{name}: median {med:,.0f} req/s over {len(values)} rounds "
                 f"(range {min(values):,.0f}–{max(values):,.0f})")
        svg.line(left + min(values) * scale, y + bar / 2, left + max(values) * scale, y + bar / 2,
                 width=2)
        svg.text(left - 8, y + bar / 2 + 4, name, anchor="end")
        svg.text(left + max(values) * scale + 6, y + bar / 2 + 4, f"{med:,.0f}", size=11)
    return svg.render()


def latency_chart(rows):
    """The direct Check latency ladder: p50/p99/p99.9 (log scale) per step, one panel per
    ext-authz setup (the run's `label`). None without gRPC steps."""
    grpc = [r for r in rows if r.get("kind") == "grpc"]
    if not grpc:
        return None
    labels = list(dict.fromkeys(r.get("label", "") for r in grpc))
    panel_w, panel_h, left, top = 340, 260, 85, 50
    width = left + len(labels) * (panel_w + 30)
    height = top + panel_h + 70
    svg = Svg(width, height, "Direct Check latency by load step (open loop, log scale)")
    values = [r[k] for r in grpc for k, _, _ in PERCENTILES if r.get(k)]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    span = math.log10(hi) - math.log10(lo)

    def y_of(v):
        return top + panel_h - (math.log10(v) - math.log10(lo)) / span * panel_h

    for p, label in enumerate(labels):
        x0 = left + p * (panel_w + 30)
        steps = [r for r in grpc if r.get("label", "") == label]
        svg.text(x0 + panel_w / 2, top - 10, label, anchor="middle", size=11)
        decade = lo
        while decade <= hi:
            svg.line(x0, y_of(decade), x0 + panel_w, y_of(decade), stroke="#ddd")
            if p == 0:
                svg.text(x0 - 6, y_of(decade) + 4, f"{decade:g} µs", anchor="end", size=11)
            decade *= 10
        slot = panel_w / len(steps)
        for i, r in enumerate(steps):
            cx = x0 + slot * (i + 0.5)
            step = f"{int(r['target_rps']):,}/s" if r.get("target_rps") else "max"
            svg.text(cx, top + panel_h + 18, step, anchor="middle", size=11)
            for j, (key, name, color) in enumerate(PERCENTILES):
                if r.get(key):
                    svg.circle(cx + (j - 1) * 10, y_of(r[key]), color,
                               f"{label}, {step}: {name} {r[key]:,.1f} µs")
    for j, (_, name, color) in enumerate(PERCENTILES):
        x = left + j * 90
        svg.circle(x, height - 18, color, name)
        svg.text(x + 10, height - 14, name, size=11)
    return svg.render()


def login_chart(rows):
    """/login req/s under a burst beside the argon2id ceiling. None without both."""
    argon = next((r for r in rows if r.get("kind") == "argon2"), None)
    login = next((r for r in rows if r.get("kind") == "wrk" and r.get("config") == "login"), None)
    if not argon or not login:
        return None
    bars = [("argon2id ceiling (cores ÷ one verify)", argon["limit_single_per_s"], "#9ecae9"),
            (f"{argon['threads']} threads verifying at once", argon["parallel_verifies_per_s"],
             "#9ecae9"),
            ("/login measured through Envoy", login["rps"], "#4c78a8")]
    left, right, top, bar, gap, width = 250, 60, 40, 24, 14, 720
    height = top + len(bars) * (bar + gap) + 40
    svg = Svg(width, height, "/login under a burst vs the argon2id ceiling (logins/s)")
    top_value = nice_max(max(v for _, v, _ in bars))
    scale = (width - left - right) / top_value
    axis_y = top + len(bars) * (bar + gap)
    for i in range(6):
        v = top_value * i / 5
        svg.line(left + v * scale, top - 4, left + v * scale, axis_y, stroke="#ddd")
        svg.text(left + v * scale, axis_y + 16, f"{v:,.0f}", anchor="middle", size=11)
    for i, (name, value, fill) in enumerate(bars):
        y = top + i * (bar + gap)
        svg.rect(left, y, value * scale, bar, fill, f"{name}: {value:,.1f}/s")
        svg.text(left - 8, y + bar / 2 + 4, name, anchor="end")
        svg.text(left + value * scale + 6, y + bar / 2 + 4, f"{value:,.1f}", size=11)
    return svg.render()


CHARTS = {"rps.svg": rps_chart, "latency.svg": latency_chart, "login.svg": login_chart}


def write_charts(rows, out_dir):
    """Writes every chart the rows have data for; returns the names written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in CHARTS.items():
        svg = draw(rows)
        if svg is not None:
            (out / name).write_text(svg, encoding="utf-8")
            written.append(name)
    return written


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    rows = [json.loads(line) for line in open(argv[1], encoding="utf-8") if line.strip()]
    for name in write_charts(rows, argv[2]):
        print(f"charts: wrote {Path(argv[2]) / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
