"""A multi-node Ray cluster on one machine: nodes declare device classes as custom resources.

Each node runs the interpreter path; each declared class gets the whole plan and its own results.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from aotune.cache_db.store import Store
from aotune.kernels import get_kernel
from aotune.tuner.driver import TuneSettings, device_class_of
from aotune.tuner.jobs import JobOptions, run_job
from aotune.workers.pool import local_specs

from .helpers_ray import smoke_job_with_a_kill

CLASSES = ("cpu-a", "cpu-b")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for label in CLASSES:
        cluster.add_node(num_cpus=2, resources={f"aotune_class_{label}": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _device_keys(url: str) -> set[str]:
    return {row["device_key"] for row in Store(url).best("selftest")}


def test_each_declared_class_gets_its_own_results(cluster, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'classes.db'}"
    specs = local_specs(interpreter=True)
    assert sorted(s.label for s in specs) == list(CLASSES)
    result = run_job(JobOptions(grid="smoke", db=url, interpreter=True))
    assert set(result.progress) == {f"cpu/interp/{label}" for label in CLASSES}
    assert all(p.problems_done == 2 for p in result.progress.values())
    assert _device_keys(url) == {f"cpu/interp/{label}" for label in CLASSES}
    hosts = {b["device_key"]: b for b in Store(url).best("selftest")}
    assert len(hosts) == 2


def test_faults_are_isolated_per_class(cluster, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    run_job(JobOptions(grid="selftest-faults", db=url, interpreter=True,
                       settings=TuneSettings(trial_timeout_s=20.0)))
    store, kernel = Store(url), get_kernel("selftest")
    problem = kernel.problem({"M": 64, "N": 64, "K": 64})
    pool_classes = {f"cpu/interp/{label}" for label in CLASSES}
    assert _device_keys(url) == pool_classes
    for spec in local_specs(interpreter=True):
        device = device_class_of({"interpreter": True, "props": {"name": spec.label}})
        rows = {r.config.get("fault", "none"): r.status for r in
                store.trials("selftest", kernel.version, device, problem.key, problem.to_dict())
                if r.config["BLOCK_N"] == 32}
        assert rows == {"none": "ok", "compile": "compile_error", "wrong": "mismatch", "hang": "timeout",
                        "kill": "crash"}


def test_worker_killed_mid_job_loses_nothing(cluster, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    result, killed, pool = smoke_job_with_a_kill(url, lambda _task: True, delay_s=0.2, poll_s=0.05)
    assert killed
    assert all(p.problems_done == 2 for p in result.progress.values())
    assert pool.slots == {} and _device_keys(url) == {f"cpu/interp/{label}" for label in CLASSES}
    kernel = get_kernel("selftest")
    for label in CLASSES:
        device = device_class_of({"interpreter": True, "props": {"name": label}})
        for m in (48, 80):
            problem = kernel.problem({"M": m, "N": 64, "K": 96})
            rows = store_rows = Store(url).trials("selftest", kernel.version, device, problem.key, problem.to_dict())
            keys = [(r.config_key, r.stage) for r in store_rows]
            assert len(keys) == len(set(keys))
            assert all(r.status in ("ok", "invalid") for r in rows), [(r.config, r.status) for r in rows]
