"""The whole tuning loop on the CPU interpreter: a real Ray actor, real compilation, real records."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from aotune.cache_db.identity import INTERPRETER
from aotune.cache_db.store import Store
from aotune.kernels import get_kernel
from aotune.tuner.driver import TuneSettings
from aotune.tuner.jobs import JobOptions, init_ray, run_job

from .helpers_db import postgres_reachable, postgres_schema_url
from .helpers_ray import smoke_job_with_a_kill


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    init_ray(None)
    yield
    ray.shutdown()


def _trials(url: str, problem: dict) -> list:
    kernel = get_kernel("selftest")
    typed = kernel.problem(problem)
    return Store(url).trials("selftest", kernel.version, INTERPRETER, typed.key, typed.to_dict())


def test_smoke_grid_writes_trials_and_best(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'smoke.db'}"
    result = run_job(JobOptions(grid="smoke", db=url, interpreter=True))
    progress = result.progress[INTERPRETER.key]
    assert progress.problems_done == 2 and progress.trials > 0
    best = Store(url).best("selftest")
    assert {b["problem_key"] for b in best} == {"M=48,N=64,K=96", "M=80,N=64,K=96"}
    rows = _trials(url, {"M": 48, "N": 64, "K": 96})
    assert len(rows) == 6  # BLOCK_M 128 is invalid for M=48: a constraint removes it, no trial is stored
    for row in rows:
        assert row.status == "ok", (row.config, row.message)
        if row.status == "ok":
            assert row.error < 1e-2 and row.timing_method == "interpreter" and row.shared_bytes > 0
            assert row.triton_version == "3.6.0" and row.host and row.worker
    # A second run finds every problem finished and records nothing new.
    again = run_job(JobOptions(grid="smoke", db=url, interpreter=True))
    assert again.progress[INTERPRETER.key].trials == 0


def test_failing_configs_are_recorded_and_the_rest_completes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    settings = TuneSettings(trial_timeout_s=20.0)
    run_job(JobOptions(grid="selftest-faults", db=url, interpreter=True, settings=settings))
    by_fault = {row.config.get("fault", "none") + ":" + str(row.config["BLOCK_N"]): row
                for row in _trials(url, {"M": 64, "N": 64, "K": 64})}
    assert by_fault["compile:32"].status == "compile_error"
    assert by_fault["wrong:32"].status == "mismatch"
    assert by_fault["hang:32"].status == "timeout"
    assert by_fault["kill:32"].status == "crash"
    assert by_fault["none:32"].status == "ok" and by_fault["none:64"].status == "ok"
    best = Store(url).best("selftest")
    assert len(best) == 1 and "fault" not in best[0]["config"]


def test_killed_driver_resumes_without_repeating(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    env = dict(os.environ, AOTUNE_DB=url, PYTHONUNBUFFERED="1")
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, "-m", "aotune.tuner.cli", "tune", "smoke", "--interpreter"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    problem = {"M": 48, "N": 64, "K": 96}
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if Path(tmp_path / "resume.db").exists() and len([r for r in _safe_trials(url, problem) if r.status == "ok"]) >= 2:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {(r.config_key, r.stage) for r in _safe_trials(url, problem)}
    assert before, "the driver was killed before it recorded anything"
    result = run_job(JobOptions(grid="smoke", db=url, interpreter=True))
    after = _trials(url, problem)
    keys = [(r.config_key, r.stage) for r in after]
    assert len(keys) == len(set(keys))  # nothing recorded twice
    assert before <= set(keys)
    assert result.progress[INTERPRETER.key].problems_done == 2
    assert len(Store(url).best("selftest")) == 2


def test_worker_killed_while_building_inputs_loses_no_problem(tmp_path: Path) -> None:
    """A worker killed during a problem's setup (inputs + reference) is replaced and the setup retried."""
    url = f"sqlite:///{tmp_path / 'setup-kill.db'}"
    # killed while building inputs, not during a trial
    result, killed, _pool = smoke_job_with_a_kill(url, lambda task: task.request is None)
    assert killed
    progress = result.progress[INTERPRETER.key]
    assert progress.statuses["setup_failed"] == 0 and progress.problems_done == 2
    assert len(Store(url).best("selftest")) == 2


def _safe_trials(url: str, problem: dict) -> list:
    try:
        return _trials(url, problem)
    except Exception:  # noqa: BLE001 - the database may not exist yet while the driver starts
        return []


@pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL at 127.0.0.1:5432 is not reachable")
def test_smoke_grid_on_postgres() -> None:
    with postgres_schema_url() as url:
        run_job(JobOptions(grid="smoke", db=url, interpreter=True))
        store = Store(url)
        assert len(store.best("selftest")) == 2
        store.engine.dispose()
