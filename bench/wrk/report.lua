-- wrk script for scripts/bench.sh: optional method/body from the environment, and a done()
-- hook that prints one JSON line with what wrk's own summary lacks (p99.9, error split).
--   WRK_METHOD  request method (default GET)
--   WRK_LABEL   copied into the JSON line
wrk.method = os.getenv("WRK_METHOD") or "GET"

function done(summary, latency, requests)
  local label = os.getenv("WRK_LABEL") or ""
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"kind":"wrk","label":"%s","requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    label, summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    e.status, e.connect, e.read, e.write, e.timeout))
end
