#!/usr/bin/env bash
# One device call for the loader and distributed issues (6, 7): first launch with shipped binaries (test and
# bench), a GPU actor killed mid-job, and the MoE V4-Flash grid on this machine's GPUs. Results go to $OUT.
# Usage on the GPU machine (deps installed, PYTHONPATH set): bash tests/bench/gpu_session.sh [scaling seconds]
set -u
out=${OUT:-/tmp/aotune-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
scaling_s=${1:-170}
date -u | tee "$out/date.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/date.txt"
AOTUNE_TEST_DEVICE=cuda timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_first_launch.py 2>&1 \
  | tail -15 | tee "$out/test_first_launch.txt"
timeout 150 python3 tests/bench/bench_first_launch.py 2>&1 | tail -20 | tee "$out/first_launch.txt"
timeout 120 python3 tests/bench/bench_gpu_kill.py selftest-gpu --kill-after-s 15 2>&1 | grep -v "^20[0-9][0-9]-" \
  | tail -20 | tee "$out/kill.txt"
timeout "$scaling_s" python3 tests/bench/bench_scaling.py deepseek-v4-flash.mxfp4_moe --workers "$(nvidia-smi -L | wc -l)" \
  --strategy random --samples 2 2>&1 | grep -v "^20[0-9][0-9]-" | tail -40 | tee "$out/scaling.txt"
