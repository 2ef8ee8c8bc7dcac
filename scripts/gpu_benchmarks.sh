#!/usr/bin/env bash
# Every GPU figure of docs/performance.md#gpu in one run (sized for the 8 minutes a
# lent GPU session allows; not yet run on one):
#   1. the local flow's training step from N = 64 to 1,728 (mw_cubic), batch 128,
#      with peak device memory and MFU (local_sweep.json/.md/.png);
#   2. the paper-scale step (transformer, bfloat16 products) at mw_cubic_512 and
#      lj_500, batch 128 (paper_mw_cubic_512.json, paper_lj_500.json).
#
#   bash scripts/gpu_benchmarks.sh OUT_DIR          # on the accelerator
#   QUICK=1 bash scripts/gpu_benchmarks.sh OUT_DIR  # the same calls, small (CPU check)
#
# QUICK=1 keeps every call but shrinks it (N <= 216, batch 4, the tiny variants of
# the paper step), so the script is checked on a CPU in a few minutes before the
# accelerator's few minutes are spent on it. A call that fails (e.g. out of device
# memory) is reported and the others still run; the exit status counts the failures.
set -uo pipefail

out=${1:?usage: gpu_benchmarks.sh OUT_DIR}
mkdir -p "$out"
mw=experiments/configs/monatomic_water.py
lj=experiments/configs/lennard_jones.py

if [[ "${QUICK:-0}" == 1 ]]; then
  sizes=mw_cubic_64,mw_cubic_216
  batch=4
  steps=2
  mw_paper="$mw:mw_cubic_64,tiny"
  lj_paper="$lj:lj_32,cpu"
else
  sizes=mw_cubic_64,mw_cubic_216,mw_cubic_512,mw_cubic_1000,mw_cubic_1728
  batch=128
  steps=10
  mw_paper="$mw:mw_cubic_512,paper"
  lj_paper="$lj:lj_500,paper"
fi

failures=0
run() {
  "$@" || { echo "FAILED ($?): $*" | tee -a "$out/failures.txt"; failures=$((failures + 1)); }
}

python -c 'import jax; print("devices:", jax.devices())' | tee "$out/devices.txt"
run python -m scripts.benchmark --config="$mw:mw_cubic_64,local" --sweep --sweep_systems="$sizes" \
  --batch_size="$batch" --steps="$steps" --warmup=1 --out="$out/local_sweep.json"
run python -m scripts.benchmark --config="$mw_paper" --batch_size="$batch" --steps="$steps" \
  --warmup=1 --out="$out/paper_mw_cubic_512.json"
run python -m scripts.benchmark --config="$lj_paper" --batch_size="$batch" --steps="$steps" \
  --warmup=1 --out="$out/paper_lj_500.json"
echo "wrote $(ls "$out" | tr '\n' ' '); $failures failed"
exit "$failures"
