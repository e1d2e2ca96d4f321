#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with aotune and its dependencies.
# torch: the CPU build on a machine without a GPU (pip finds the local wheel or PyPI's); on a GPU machine
# install your CUDA build of torch first, or set AOTUNE_TORCH to the requirement you want.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${AOTUNE_TORCH:-torch==2.13.0}"
# numpy < 2.4: Triton 3.6's CPU interpreter breaks on numpy 2.4 (range() over a runtime int).
.venv/bin/python -m pip install -q -e ".[dev,postgres]" "numpy<2.4"
echo "aotune installed in .venv: run '.venv/bin/aotune tune' (or 'source .venv/bin/activate')"
