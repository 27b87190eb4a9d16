#!/usr/bin/env bash
# TIGER on Amazon Beauty on one GPU (issue 15), as one command for the device machine; see docs/tiger.md.
#   bash benchmarks/scripts/gpu/tiger_beauty.sh                   # speed figures, then tiger + popularity + sasrec
#   bash benchmarks/scripts/gpu/tiger_beauty.sh --methods "tiger_rqkmeans" --no-speed --minutes 9
#   bash benchmarks/scripts/gpu/tiger_beauty.sh --tiny            # the CPU rehearsal (toy sizes, not a result)
# Needs .gpu_carry/ (python benchmarks/scripts/gpu/prepare_carry.py): Beauty's files and its MiniLM features;
# --tiny reads runs/carry_tiny/ (prepare_carry.py --users 600 --out runs/carry_tiny: the first 600 users).
# Writes to $OUT (the device tool's folder; default runs/gpu-out): speed.log, speed.json, bench.log, results.tar.gz.
set -uo pipefail
OUT=${OUT:-$PWD/runs/gpu-out}
CARRY=${CARRY:-}
MINUTES=9.3                 # the whole command, inside the tool's 10-minute limit
METHODS="tiger popularity sasrec"
SEEDS=0
SPEED=1
TINY=0
EXTRA_SPEED=""
RESERVE=415                 # seconds kept for the benchmark: tiger's expected_minutes (6.5) + 25 s to pack
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --no-speed) SPEED=0 ;;
    --minutes) MINUTES=$2; shift ;;
    --methods) METHODS=$2; shift ;;
    --seeds) SEEDS=$2; shift ;;
    --speed-args) EXTRA_SPEED=$2; shift ;;
    --reserve) RESERVE=$2; shift ;;     # e.g. "--levers-only": appended to tiger_speed.py's arguments
    *) echo "tiger_beauty.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$CARRY" ] || { [ "$TINY" = 1 ] && CARRY=runs/carry_tiny || CARRY=.gpu_carry; }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
START=$(date +%s)
left() { python3 -c "import sys; print(max(0, int(float(sys.argv[1]) * 60 - ($(date +%s) - $START) - int(sys.argv[2]))))" "$MINUTES" "$1"; }
gb() { python3 -c 'import sys; from genrec_bench.cli import main; sys.exit(main())' "$@"; }

[ -f "$CARRY/beauty_minilm.npy" ] && [ -f "$CARRY/beauty/test.txt" ] || {
  echo "tiger_beauty.sh: $CARRY/ lacks the data or features; run benchmarks/scripts/gpu/prepare_carry.py" >&2; exit 2; }
# A bare machine has the dependencies but not this package: install it in place (no downloads); where pip cannot
# build it (no wheel package), put the package metadata and a link on PYTHONPATH instead (nothing is built).
installed() { python3 - <<'PY'
import importlib.metadata as m, sys
sys.exit(0 if {"tiger", "rqkmeans"} <= {e.name for e in m.entry_points(group="genrec_bench")} else 1)
PY
}
link_in_place() {
  local site=${TMPDIR:-/tmp}/genrec-site info
  info=$site/genrec_bench-0.1.0.dist-info
  mkdir -p "$info" && ln -sfn "$PWD/plugins" "$site/genrec_bench_plugins"
  printf 'Metadata-Version: 2.1\nName: genrec-bench\nVersion: 0.1.0\n' > "$info/METADATA"
  python3 - "$info/entry_points.txt" <<'PY'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
lines = [l.strip() for l in cfg["options.entry_points"]["genrec_bench"].splitlines() if l.strip()]
open(sys.argv[1], "w").write("[genrec_bench]\n" + "\n".join(lines) + "\n")
PY
  export PYTHONPATH=$site:$PWD${PYTHONPATH:+:$PYTHONPATH}
}
installed || python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || true
installed || { link_in_place; installed; } || { echo "tiger_beauty.sh: cannot make genrec-bench importable" >&2; exit 3; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU";
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"; } | tee "$OUT/env.txt"

DATA="beauty=contrec:$CARRY/beauty"
if [ "$TINY" = 1 ]; then
  YAML=benchmarks/paper/tiger_beauty_gpu_tiny.yaml; SPEED_ARGS=(--tiny --dataset "$DATA"); DEVICE=cpu
else
  YAML=benchmarks/paper/tiger_beauty_gpu.yaml; DEVICE=auto
  SPEED_ARGS=(--dataset "$DATA" --profile paper --batch-sizes 256,1024 --train-steps 40 --warmup-steps 10 --levers --threads 8)
fi
SPEED_LIMIT=$(left "$RESERVE")
if [ "$SPEED" = 1 ] && [ "$SPEED_LIMIT" -lt 20 ]; then
  echo "tiger_beauty.sh: only ${SPEED_LIMIT} s for the speed figures once ${RESERVE} s are reserved; skipped" | tee "$OUT/speed.log"
elif [ "$SPEED" = 1 ]; then
  timeout "$SPEED_LIMIT" python3 benchmarks/scripts/tiger_speed.py "${SPEED_ARGS[@]}" $EXTRA_SPEED --json "$OUT/speed.json" \
    2>&1 | tee "$OUT/speed.log"
  echo "speed script exit status ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s" | tee -a "$OUT/speed.log"
fi

RESULTS=runs/$(basename "$YAML" .yaml)
METHOD_ARGS=(); for m in $METHODS; do METHOD_ARGS+=(--method "$m"); done
BUDGET=$(left 25)          # seconds left for the benchmark, keeping 25 s to pack the results
[ "$BUDGET" -ge 30 ] || { echo "tiger_beauty.sh: no time left for the benchmark" | tee "$OUT/bench.log"; BUDGET=1; }
timeout "$BUDGET" python3 -c 'import sys; from genrec_bench.cli import main; sys.exit(main())' run "$YAML" \
  --dataset "$DATA" --device "$DEVICE" --results "$RESULTS" --seeds "$SEEDS" "${METHOD_ARGS[@]}" \
  --max-minutes "$(python3 -c "print(round($BUDGET / 60, 2))")" --no-progress 2>&1 | tee "$OUT/bench.log"
echo "benchmark exit status ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s" | tee -a "$OUT/bench.log"
gb leaderboard "$RESULTS/$(basename "$YAML" .yaml)" >> "$OUT/bench.log" 2>&1 || true
tar czf "$OUT/results.tar.gz" "$RESULTS" && ls -la "$OUT"
