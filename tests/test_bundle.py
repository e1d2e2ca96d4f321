"""Bundles: export/import (SQLite -> PostgreSQL), idempotent merges, tamper refusal, schema, CLI, transfer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aotune.cache_db import loader
from aotune.cache_db.bundle import (SCHEMA_PATH, json_schema, merge, new_bundle, read_bundle, to_dict,
                                    write_bundle)
from aotune.cache_db.bundle_store import export_from_store, import_into_store
from aotune.cache_db.identity import INTERPRETER, DeviceClass
from aotune.cache_db.schema import BestRow, TrialRow
from aotune.cache_db.store import Store, TrialRecord
from aotune.kernels import config_key, get_kernel
from aotune.tuner.cli_bundle import bundle_app, query_command

from .helpers_db import postgres_reachable, postgres_schema_url

H100 = DeviceClass("nvidia", "sm_90", "h100-80gb-hbm3", 232448, 132)
KERNEL = get_kernel("selftest")
BASE = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1, "num_warps": 4, "num_stages": 2}
# the last one is the fastest: 163,840 B of shared memory on sm_90, 122,880 B on sm_120 (does not fit)
CONFIGS = [BASE, {**BASE, "BLOCK_M": 32, "BLOCK_N": 64},
           {**BASE, "BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 64, "num_stages": 4}]


def fill(store: Store, device: DeviceClass = H100, problems: tuple[int, ...] = (48, 80, 112),
         scale: float = 1.0) -> None:
    """Trials of three configs per problem (the oversized one fastest) and the best row, via Store verbs."""
    for m in problems:
        problem = KERNEL.problem({"M": m, "N": 256, "K": 96})
        ids = []
        for i, config in enumerate(CONFIGS):
            median = scale * (10.0 + m / 10 - 3 * i)
            ids.append(store.commit_trial(TrialRecord(
                kernel="selftest", kernel_version=KERNEL.version, device=device, problem_key=problem.key,
                problem=problem.to_dict(), config_key=config_key(config), config=config, status="ok",
                median_us=median, p20_us=median * 0.98, p80_us=median * 1.03, shared_bytes=4096 * (i + 1),
                versions={"triton": "3.6.0", "torch": "2.13", "cuda": "12.8"})))
        best = BestRow(trial_id=ids[-1], config=CONFIGS[-1], median_us=scale * (10.0 + m / 10 - 6),
                       p20_us=1.0, p80_us=2.0, default_median_us=scale * 20.0, shared_bytes=4096 * 3)
        store.finish_problem("selftest", KERNEL.version, device, problem.key, problem.to_dict(), "exhaustive",
                             best, None)


def sqlite_store(tmp_path: Path, name: str = "a.db") -> Store:
    store = Store(f"sqlite:///{tmp_path / name}")
    store.init()
    return store


def comparable(rows: list[dict]) -> list[tuple]:
    return sorted((r["kernel"], r["kernel_version"], r["device_key"], r["problem_key"], config_key(r["config"]),
                   r["median_us"], r["shared_bytes"], r["source"]) for r in rows)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from aotune.tuner import cli_bundle

    monkeypatch.setattr(cli_bundle, "console", Console(width=240))


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not postgres_reachable():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable")
    with postgres_schema_url() as url:
        yield url


@pytest.mark.postgres
def test_sqlite_to_postgres_round_trip(tmp_path: Path, pg_url: str) -> None:
    source = sqlite_store(tmp_path)
    fill(source)
    fill(source, INTERPRETER, problems=(48,))
    path = write_bundle(export_from_store(source), tmp_path / "b.json")
    target = Store(pg_url)
    target.init()
    assert import_into_store(read_bundle(path), target).added == 4
    assert comparable(target.best()) == comparable(source.best())
    again = import_into_store(read_bundle(path), target)
    assert (again.added, again.replaced, again.kept) == (0, 0, 4)
    assert comparable(target.best()) == comparable(source.best())
    back = export_from_store(target)
    assert [e.model_dump(exclude={"environment"}) for e in back.entries] == \
        [e.model_dump(exclude={"environment"}) for e in read_bundle(path).entries]
    target.engine.dispose()


def test_import_twice_changes_nothing(tmp_path: Path) -> None:
    source = sqlite_store(tmp_path)
    fill(source)
    bundle = export_from_store(source)
    target = sqlite_store(tmp_path, "b.db")
    first = import_into_store(bundle, target)
    with target.session() as session:
        trials = session.query(TrialRow).count()
    second = import_into_store(bundle, target)
    assert (first.added, second.added, second.replaced, second.kept) == (3, 0, 0, 3)
    with target.session() as session:
        assert session.query(TrialRow).count() == trials == 3
    assert comparable(target.best()) == comparable(source.best())


def test_import_keeps_the_faster(tmp_path: Path) -> None:
    slow, fast = sqlite_store(tmp_path, "slow.db"), sqlite_store(tmp_path, "fast.db")
    fill(slow, scale=2.0)
    fill(fast, problems=(48,), scale=0.5)
    target = sqlite_store(tmp_path, "t.db")
    import_into_store(export_from_store(fast), target)
    report = import_into_store(export_from_store(slow), target)
    assert (report.added, report.replaced, report.kept) == (2, 0, 1)
    report = import_into_store(export_from_store(fast), target)
    assert (report.added, report.replaced, report.kept) == (0, 0, 1)
    medians = {r["problem_key"]: r["median_us"] for r in target.best()}
    assert medians["M=48,N=256,K=96"] == pytest.approx(0.5 * (10 + 4.8 - 6))
    transferred = export_from_store(fast).entries[0].model_copy(update={"source": "transferred", "median_us": 0.01})
    again = import_into_store(new_bundle([transferred], export_from_store(fast).devices), target)
    assert again.kept == 1  # a transferred entry never replaces a measurement


def test_every_flipped_byte_is_refused(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    fill(store, problems=(48,))
    path = write_bundle(export_from_store(store), tmp_path / "b.json")
    data = path.read_bytes()
    read_bundle(path)
    bad = tmp_path / "bad.json"
    for offset in range(len(data)):
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(loader.BundleError):
            read_bundle(bad)
    flipped = bytearray(data)
    offset = data.index(b'"median_us": ') + len(b'"median_us": ')
    flipped[offset] ^= 0x01
    bad.write_bytes(bytes(flipped))
    result = CliRunner().invoke(_app(), ["bundle", "import", str(bad), "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1 and "refused" in text and "checksum mismatch, the file was changed" in text


def test_merge_no_duplicates_faster_wins(tmp_path: Path) -> None:
    a, b = sqlite_store(tmp_path, "a.db"), sqlite_store(tmp_path, "b.db")
    fill(a, scale=1.0)
    fill(b, problems=(48, 200), scale=0.5)
    merged = merge([export_from_store(a), export_from_store(b)])
    assert len(merged.entries) == 4
    assert len({e.ident for e in merged.entries}) == 4
    by_problem = {e.problem_key: e.median_us for e in merged.entries}
    assert by_problem["M=48,N=256,K=96"] == pytest.approx(0.5 * (10 + 4.8 - 6))
    assert merge([merged, merged]).entries == merged.entries
    assert loader.verify(to_dict(merged), "merged")["checksum"] == merged.checksum


def test_newer_format_is_refused(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    fill(store, problems=(48,))
    data = to_dict(export_from_store(store))
    data["format_version"] = loader.FORMAT_VERSION + 1
    data["checksum"] = loader.checksum(data)
    (tmp_path / "new.json").write_text(json.dumps(data))
    with pytest.raises(loader.BundleError, match="newer than this aotune"):
        read_bundle(tmp_path / "new.json")


def test_published_schema_is_up_to_date() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), \
        "configs/bundle.schema.json is stale: run `python -m aotune.cache_db.bundle`"


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(bundle_app, name="bundle")
    app.command("query")(query_command)
    return app


def test_cli_export_inspect_merge_query(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    fill(store, INTERPRETER, problems=(48, 112))
    url, runner, app = store.url, CliRunner(), _app()
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["bundle", "export", "--out", str(out), "--db", url, "--kernel", "selftest"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["bundle", "inspect", str(out)])
    assert result.exit_code == 0 and "checksum ok" in result.output and "selftest" in result.output
    result = runner.invoke(app, ["bundle", "merge", str(out), str(out), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0 and len(read_bundle(tmp_path / "m.json").entries) == 2
    result = runner.invoke(app, ["query", "--kernel", "selftest", "-p", "M=60", "-p", "N=256", "-p", "K=96",
                                 "--device", "interp", "--bundle", str(out)])
    assert result.exit_code == 0, result.output
    assert "nearest:M=48" in result.output and "e.json" in result.output
    result = runner.invoke(app, ["query", "--kernel", "selftest", "-p", "M=112", "-p", "N=256", "-p", "K=96",
                                 "--device", "interp", "--db", url])
    assert result.exit_code == 0 and "exact" in result.output and "a.db" in result.output


def test_transfer_to_sm120_keeps_best_that_fits(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    fill(store, problems=(48,))
    out = tmp_path / "t.json"
    result = CliRunner().invoke(_app(), ["bundle", "transfer", "--from-device", H100.product, "--target", "sm_120",
                                         "--out", str(out), "--db", store.url, "--top", "3"])
    assert result.exit_code == 0, result.output
    (entry,) = read_bundle(out).entries
    # the fastest measured config (64x256x64, 4 stages) does not fit sm_120; the next one does
    assert entry.source == "transferred" and entry.config == CONFIGS[1] and entry.transferred_from == H100.key
    assert 0 < entry.shared_bytes <= 101_376
    rtx = DeviceClass("nvidia", "sm_120", "geforce-rtx-5090", 101376, 170)
    answer = loader.Loader([out], defaults=False).lookup(
        "selftest", KERNEL.version, {"M": 48, "N": 256, "K": 96}, rtx, bucketed="M")
    assert (answer.source, answer.obtained) == ("arch:sm_120/generic", "transferred")


def test_exported_binaries_are_a_triton_cache_hit(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    fill(store, problems=(48,))
    out = tmp_path / "bin.json"
    result = CliRunner().invoke(_app(), ["bundle", "export", "--out", str(out), "--db", store.url, "--binaries"])
    assert result.exit_code == 0, result.output
    from aotune.tuner.host_stubs import cuda_driver_present

    assert ("no CUDA driver here" in result.output) == (not cuda_driver_present())  # said, not skipped silently
    answer = loader.Loader([out], defaults=False).lookup(
        "selftest", KERNEL.version, {"M": 48, "N": 256, "K": 96}, H100, bucketed="M")
    cache = tmp_path / "triton-cache"
    from aotune.kernels.runtime import install_binaries

    assert install_binaries(answer, "sm_90", "3.6.0", cache) == 1
    script = ("from aotune.tuner.feasibility import compile_launch; from aotune.tuner.arch import get_arch;"
              "from aotune.kernels import get_kernel; k = get_kernel('selftest');"
              f"[compile_launch(l, get_arch('sm_90')) for l in k.launches(k.problem({{'M': 48, 'N': 256, 'K': 96}}),"
              f" {CONFIGS[-1]!r})]")
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache)}
    env.pop("TRITON_INTERPRET", None)
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    assert sorted(p.suffix for p in folder.iterdir()) == [".cubin", ".json", ".json"]  # nothing recompiled
