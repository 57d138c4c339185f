#!/usr/bin/env bash
# make fuzz: run every cargo-fuzz target in fuzz/ for a bounded time and report executions and
# coverage. Any crash fails the run; its input is left in fuzz/artifacts/<target>/ — turn it into
# a regression test (a unit/property test in the crate that owns the code) before fixing.
#
#   FUZZ_SECONDS=60 (per target)   FUZZ_TARGETS="verify_token ..." (default: all)
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address, sancov passes); we use the stable
# toolchain with RUSTC_BOOTSTRAP=1 rather than pinning a nightly.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
ALL_TARGETS="verify_token basic_credentials keys_dir check_request"
FUZZ_TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

# One build of every target (release, debug assertions, ASan); `run` then reuses it.
cargo fuzz build --fuzz-dir fuzz

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
printf '%-18s %12s %10s %8s %8s %s\n' target executions exec/s cov ft result > "$logs/summary"
for target in $FUZZ_TARGETS; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  seeds=()
  [[ -d fuzz/seeds/$target ]] && seeds=("fuzz/seeds/$target")
  extra=()
  [[ $target == verify_token ]] && extra=(-dict=fuzz/dict/jwt.dict)
  echo "fuzz: $target for ${FUZZ_SECONDS}s" >&2
  result=ok
  # -rss_limit_mb: a token or a keys dir must never need more than this to be judged.
  if ! cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" "${seeds[@]}" -- \
      -max_total_time="$FUZZ_SECONDS" -max_len=16384 -rss_limit_mb=1024 -timeout=10 \
      -print_final_stats=1 "${extra[@]}" >"$logs/$target.log" 2>&1; then
    result=CRASH
    failed+=("$target")
    tail -n 60 "$logs/$target.log" >&2
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -oE '(DONE|pulse|NEW|REDUCE) +cov: [0-9]+ ft: [0-9]+' "$logs/$target.log" | tail -1)
  printf '%-18s %12s %10s %8s %8s %s\n' "$target" "${execs:-?}" "${rate:-?}" \
    "$(awk '{print $3}' <<<"$cov")" "$(awk '{print $5}' <<<"$cov")" "$result" >> "$logs/summary"
done
cat "$logs/summary"
if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: no crashes"
