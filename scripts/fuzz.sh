#!/usr/bin/env bash
# Runs the cargo-fuzz targets of tracer-core/fuzz: installs what is missing (scripts/setup-fuzz.sh),
# builds, runs each target for SECONDS (default 60), then prints executions and findings per
# target. A crash does not end a target's time: it is recorded and fuzzing resumes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Env: FUZZ_JOBS (targets fuzzed at once; default: half the cores, at least 1),
#      FUZZ_CORPUS (directory of the growing corpora, one subdirectory per target; default
#      tracer-core/fuzz/corpus),
#      FUZZ_SANITIZER (default none: the code is safe Rust, so what matters are panics, overflow
#      checks and debug assertions, all on; `address` is ~3x slower).
# Corpora: seeds/ (committed, from `fuzz-seeds`), regressions/ (committed, inputs that once
# failed) and corpus/ (what libFuzzer found, not committed). Findings land in artifacts/TARGET/.
# Exit status 1 when anything was found.
set -euo pipefail

secs=${1:-60}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz=$root/tracer-core/fuzz
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd "$fuzz/fuzz_targets" && ls ./*.rs | sed 's|^\./||; s|\.rs$||')
fi
cores=$(nproc)
jobs=${FUZZ_JOBS:-$(( cores / 2 > 0 ? cores / 2 : 1 ))}
sanitizer=${FUZZ_SANITIZER:-none}
corpus=${FUZZ_CORPUS:-$fuzz/corpus}

say() { printf 'fuzz.sh: %s\n' "$*" >&2; }

# --- what is needed ---------------------------------------------------------------------------
bash "$root/scripts/setup-fuzz.sh"

# --- build ------------------------------------------------------------------------------------
# The targets link the test kit and the core crate only: no daemon, no eBPF programs.
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
(cd "$root/tracer-core" && cargo +nightly fuzz build -s "$sanitizer" >&2) \
    || { say "build failed"; exit 2; }
bin=$fuzz/target/$triple/release

# --- run --------------------------------------------------------------------------------------
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

run_target() {
    local t=$1 start end left execs=0 finds=0 rc log n t0
    mkdir -p "$corpus/$t" "$fuzz/artifacts/$t" "$fuzz/seeds/$t" "$fuzz/regressions/$t"
    start=$(date +%s)
    end=$(( start + secs ))
    log=$results/$t.log
    while left=$(( end - $(date +%s) )); [ "$left" -gt 0 ]; do
        rc=0
        t0=$(date +%s)
        "$bin/$t" -max_total_time="$left" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$fuzz/artifacts/$t/" \
            "$corpus/$t" "$fuzz/seeds/$t" "$fuzz/regressions/$t" >"$log" 2>&1 || rc=$?
        # Executions: the final stats, or the last status line when the run died on a crash.
        n=$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -1)
        [ -n "$n" ] || n=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
        execs=$(( execs + ${n:-0} ))
        if [ "$rc" -ne 0 ]; then
            finds=$(( finds + 1 ))
            grep -m1 -E 'panicked at|ERROR: libFuzzer' "$log" >&2 || true
            cp "$log" "$fuzz/artifacts/$t/log-$(date +%s)"
            # A corpus input failing as soon as it is loaded would fail again: stop this target.
            [ $(( $(date +%s) - t0 )) -lt 2 ] && break
        fi
    done
    printf '%s %s %s %s %s\n' "$t" "$execs" "$(( $(date +%s) - start ))" "$finds" \
        "$(find "$corpus/$t" -type f | wc -l)" >"$results/$t.result"
}
export -f run_target
export fuzz bin secs results corpus

say "fuzzing ${#targets[@]} target(s) for ${secs}s each, $jobs at a time ($sanitizer sanitizer)"
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_target {}'

total=0
found=0
printf '\n%-16s %14s %8s %9s %9s %7s\n' target executions seconds exec/s findings corpus
for t in "${targets[@]}"; do
    read -r _ execs took finds size <"$results/$t.result"
    printf '%-16s %14s %8s %9s %9s %7s\n' "$t" "$execs" "$took" "$(( execs / (took > 0 ? took : 1) ))" "$finds" "$size"
    total=$(( total + execs ))
    found=$(( found + finds ))
done
printf '%-16s %14s %8s %9s %9s\n' total "$total" "" "" "$found"
[ "$found" -eq 0 ] || { say "findings are in $fuzz/artifacts/"; exit 1; }
