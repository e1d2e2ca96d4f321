"""The opt-in memo of Triton's install hash: same value as Triton's, read back from disk, never a bad one."""
from __future__ import annotations

from pathlib import Path

import pytest
import triton.runtime.cache as triton_cache

from aotune.kernels import triton_key


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AOTUNE_TRITON_KEY_DIR", str(tmp_path))
    triton_key.cached_triton_key.cache_clear()
    yield tmp_path
    triton_key.cached_triton_key.cache_clear()


def test_memo_equals_tritons_key_and_is_read_back(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = triton_key._ORIGINAL()
    assert triton_key.cached_triton_key() == expected
    (stored,) = store.iterdir()
    assert stored.read_text() == expected and stored.name == f"{triton_key.fingerprint()}.key"
    triton_key.cached_triton_key.cache_clear()

    def not_again() -> str:
        raise AssertionError("recomputed although the fingerprint is stored")

    monkeypatch.setattr(triton_key, "_ORIGINAL", not_again)
    assert triton_key.cached_triton_key() == expected


def test_damaged_memo_is_recomputed(store: Path) -> None:
    expected = triton_key._ORIGINAL()
    (store / f"{triton_key.fingerprint()}.key").write_text(expected[:-7])  # truncated
    assert triton_key.cached_triton_key() == expected


def test_enable_routes_tritons_cache_keys(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_cache, "triton_key", triton_cache.triton_key)  # restored after the test
    monkeypatch.setenv(triton_key.ENV, "0")
    triton_key.enable_from_env()
    assert triton_cache.triton_key is triton_key._ORIGINAL
    monkeypatch.setenv(triton_key.ENV, "1")
    triton_key.enable_from_env()
    assert triton_cache.triton_key is triton_key.cached_triton_key
