#!/usr/bin/env bash
# The GPU check in one go, on a machine with a CUDA GPU (nothing is downloaded):
#   1. the tests marked gpu (device placement, AMP, pinned batches, an in-process round on CUDA),
#   2. python -m benchmarks.gpu (ResNet-18 rounds per method / size / precision / layout, Ray sharing),
#   3. python -m benchmarks.preset_time (each paper preset's wall time from the benchmark's JSON).
#
#   scripts/gpu_check.sh [OUT]                      # everything goes under OUT (default gpu-check-<time>)
#   GPU_BENCH_ARGS="--quick" scripts/gpu_check.sh   # fp32 and bf16+channels-last only (about half the time)
#   PYTHON=.venv/bin/python scripts/gpu_check.sh
#
# Then commit OUT/gpu.json as benchmarks/results/gpu.json and OUT/preset-estimates.md into
# docs/results/gpu-presets.md (see that file). Exit status: non-zero if the tests or the benchmark failed.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
echo "[gpu_check] gpu tests -> $OUT/pytest-gpu.txt"
$PY -m pytest -m gpu -rA tests/test_gpu.py > "$OUT/pytest-gpu.txt" 2>&1
tests=$?
tail -n 3 "$OUT/pytest-gpu.txt"
echo "[gpu_check] benchmarks.gpu ${GPU_BENCH_ARGS:-} -> $OUT/gpu.json (log: $OUT/gpu.log)"
# shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of options
$PY -m benchmarks.gpu --out-dir "$OUT/bench" ${GPU_BENCH_ARGS:-} > "$OUT/gpu.stdout" 2> "$OUT/gpu.log"
bench=$?
estimates=1
if [ -f "$OUT/bench/gpu.json" ]; then
    cp "$OUT/bench/gpu.json" "$OUT/gpu.json"
    $PY -m benchmarks.preset_time "$OUT/gpu.json" --markdown "$OUT/preset-estimates.md" \
        > "$OUT/preset-estimates.json" 2> "$OUT/preset-estimates.log"
    estimates=$?
fi
echo "[gpu_check] tests exit $tests, benchmark exit $bench, estimates exit $estimates; results in $OUT"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$estimates" -eq 0 ]
