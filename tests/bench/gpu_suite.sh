#!/usr/bin/env bash
# Everything that needs a GPU, in one device call: the gpu-marked tests of every kernel, the tuner's
# throughput on the selftest grid, and the first-launch times of the loader. Results go to $OUT.
# Usage on the GPU machine (deps installed, PYTHONPATH set): bash tests/bench/gpu_suite.sh
set -u
out=${OUT:-/tmp/aotune-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/device.txt"
AOTUNE_TEST_DEVICE=cuda timeout 220 python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tail -25 | tee "$out/gpu_tests.txt"
timeout 160 python3 tests/bench/bench_tuner.py selftest-gpu --db sqlite:////tmp/aotune-bench.db 2>&1 \
  | grep -v "^20[0-9][0-9]-" | tee "$out/tuner.txt"
timeout 150 python3 tests/bench/bench_first_launch.py 2>&1 | tail -30 | tee "$out/first_launch.txt"
