"""Test settings: CPU tests run the kernels under Triton's interpreter; GPU tests are marked ``gpu``.

Set ``AOTUNE_TEST_DEVICE=cuda`` (on the GPU machine) to run the ``gpu``-marked tests on a real device:
``AOTUNE_TEST_DEVICE=cuda pytest -m gpu``.
"""
from __future__ import annotations

import os

TEST_DEVICE = os.environ.get("AOTUNE_TEST_DEVICE", "cpu")
if TEST_DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
