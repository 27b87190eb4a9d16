#!/usr/bin/env bash
# One time-limited GPU call of a sweep: run what fits in MINUTES, pack the cells finished in this call.
#
#   benchmarks/scripts/run_gpu_sweep.sh BENCH.yaml MINUTES [RESULTS] [-- extra 'genrec-bench run' options]
#
# Runs `genrec-bench run BENCH.yaml --results RESULTS --max-minutes MINUTES` (RESULTS default: results), so
# cells finished in earlier calls are skipped and their recorded times size this call; cells that would not
# finish in time are deferred, not started. The cells written by this call (result.json newer than the start)
# and run.log are packed into $OUT/cells.tar.gz (or ./gpu-call-out/ without $OUT). On the machine that keeps
# the results, unpack and merge them (a finished cell is never replaced by one with another identity):
#
#   mkdir -p /tmp/call && tar -xzf cells.tar.gz -C /tmp/call && genrec-bench merge /tmp/call results
#
# Exit status: that of `genrec-bench run` (0 when every started cell finished, deferred cells included;
# 1 when a cell failed; 2 for bad input). See docs/scaling.md, "A sweep across time-limited GPU calls".
set -uo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
bench=$1 minutes=$2
shift 2
results=results
if [ $# -gt 0 ] && [ "$1" != "--" ]; then results=$1; shift; fi
[ "${1:-}" = "--" ] && shift
out=${OUT:-gpu-call-out}
mkdir -p "$out"

if ! python -c "import genrec_bench" 2>/dev/null; then  # a bare machine: install the working tree, offline
    pip install -q --no-deps --no-index --no-build-isolation -e . || exit 2
fi
name=$(python -c "import sys; from genrec_bench.config import load_benchmark; print(load_benchmark(sys.argv[1]).name)" "$bench") || exit 2

stamp=$(mktemp)
touch "$stamp"
python -m genrec_bench.cli run "$bench" --results "$results" --max-minutes "$minutes" --no-progress "$@"
rc=$?

folder="$results/$name"
list=$(mktemp)
if [ -d "$folder" ]; then
    (cd "$results" && find "$name" -path "*/seed-*/result.json" -newer "$stamp" -printf '%h\n') > "$list"
    [ -f "$folder/run.log" ] && echo "$name/run.log" >> "$list"
fi
if [ -s "$list" ]; then
    tar -czf "$out/cells.tar.gz" -C "$results" -T "$list"
    echo "packed $(grep -c seed- "$list") cell(s) of this call into $out/cells.tar.gz"
else
    echo "no cell finished in this call; nothing packed"
fi
python -m genrec_bench.cli status "$folder" "$bench" > "$list" && head -n 1 "$list"
rm -f "$stamp" "$list"
exit $rc
