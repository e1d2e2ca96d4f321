"""Test helpers for the MXFP4 MoE launcher."""
from __future__ import annotations

import pytest

from aotune.kernels import mxfp4_moe


def poison_workspaces(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = ("split_ws", "inter", "dst")) -> None:
    """Every call's floating-point workspaces ``names`` start as NaN (``mxfp4_moe._workspace``), so a value a
    launch reads but no launch wrote reaches the output."""
    workspace = mxfp4_moe._workspace

    def poisoned(*args: object) -> dict:
        ws = workspace(*args)
        for name in names:
            if ws[name].is_floating_point():
                ws[name].fill_(float("nan"))
        return ws

    monkeypatch.setattr(mxfp4_moe, "_workspace", poisoned)
