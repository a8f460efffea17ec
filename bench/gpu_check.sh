#!/usr/bin/env bash
# The GPU half of issue #12 in one go, for a session that has a CUDA device (not run yet: no GPU so far).
#
#   OUT=/some/folder bash bench/gpu_check.sh       # from the repository root; results land in $OUT
#
# Budget: under 8 minutes on one H100 (each part has its own timeout, so one slow part cannot eat the
# rest). Writes $OUT/gpu_check.md (everything printed) and the profiler traces. Steps:
#   1. environment (nvidia-smi, torch, CUDA) and the tests marked gpu plus the CUDA streams test (~1 min);
#   2. syncs per attack-loop iteration on CUDA (bench/bench_syncs.py --device cuda; the CPU count is
#      tests/test_syncs.py): every attack should show at most one look every K = 8 iterations (~1 min);
#   3. bench/bench_scale.py gpu: ResNet-18 32x32 (batch 512) and ResNet-50 224x224 (batch 128), random
#      weights, PGD 40 steps against the raw 40 forward+backward passes (target <= 1.05x), float32 vs
#      bf16 autocast (target >= 1.5x on ResNet-50, outcomes agreeing), with a trace of one PGD call (~4 min).
set -u
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LOG=$OUT/gpu_check.md
start=$(date +%s)
section() { printf '\n## %s (t=%ss)\n\n```\n' "$1" "$(( $(date +%s) - start ))" | tee -a "$LOG"; }
close() { printf '```\n' | tee -a "$LOG"; }

printf '# GPU check (bench/gpu_check.sh), %s\n' "$(date -u +%FT%TZ)" | tee "$LOG"
section "environment"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  uptime; } 2>&1 | tee -a "$LOG"
close

section "GPU tests (the tests marked gpu; the CUDA random streams)"
timeout 150 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_precision.py 2>&1 | tail -n 25 | tee -a "$LOG"
timeout 60 $PY -m pytest -q -p no:cacheprovider -k gpu tests/test_randomness.py 2>&1 | tail -n 5 | tee -a "$LOG"
close

section "syncs per attack-loop iteration on CUDA (K = 8)"
timeout 120 $PY bench/bench_syncs.py --device cuda -n 256 2>&1 | grep -v '^USDT' | tee -a "$LOG"
close

section "bench_scale gpu: PGD vs raw passes, float32 vs bf16"
timeout 270 $PY bench/bench_scale.py gpu --steps 40 --repeats 3 --trace "$OUT/pgd-trace.json" 2>&1 \
    | grep -v '^USDT' | tee -a "$LOG"
close
printf '\ntotal %ss\n' "$(( $(date +%s) - start ))" | tee -a "$LOG"
