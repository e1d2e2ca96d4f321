"""The worker pool on its own: a callable that raises, one that kills its worker, one that hangs."""
from __future__ import annotations

import operator
import os
import time

import pytest
import ray

from aotune.tuner.jobs import init_ray
from aotune.workers.pool import WorkerPool, WorkerSpec


@pytest.fixture(scope="module")
def pool():
    init_ray(None)
    pool = WorkerPool([WorkerSpec("w0", interpreter=True)])
    yield pool
    pool.shutdown()
    ray.shutdown()


def _wait(pool: WorkerPool, limit_s: float = 120.0) -> list:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        done = pool.poll(timeout_s=0.2)
        if done:
            return done
    raise AssertionError("nothing completed")


def test_result_is_tagged_with_worker_and_host(pool: WorkerPool) -> None:
    pool.submit("w0", "add", operator.add, (2, 3), timeout_s=60)
    (done,) = _wait(pool)
    assert done.ok and done.value == 5 and done.tag == "add" and done.worker == "w0" and done.host


def test_an_exception_is_an_error_and_the_worker_lives_on(pool: WorkerPool) -> None:
    pid = pool.info("w0")["pid"]
    pool.submit("w0", "raise", operator.getitem, ({}, "missing"), timeout_s=60)
    (done,) = _wait(pool)
    assert not done.ok and done.failure == "error" and "KeyError" in done.message
    assert pool.info("w0")["pid"] == pid and pool.slots["w0"].restarts == 0


def test_a_dead_worker_is_a_crash_and_is_replaced(pool: WorkerPool) -> None:
    pid = pool.info("w0")["pid"]
    pool.submit("w0", "exit", os._exit, (3,), timeout_s=60)
    (done,) = _wait(pool)
    assert not done.ok and done.failure == "crash"
    assert pool.info("w0")["pid"] != pid
    pool.submit("w0", "after", operator.add, (1, 1), timeout_s=60)
    assert _wait(pool)[0].value == 2


def test_a_hang_is_a_timeout_and_the_worker_is_replaced(pool: WorkerPool) -> None:
    pid = pool.info("w0")["pid"]
    pool.submit("w0", "sleep", time.sleep, (600,), timeout_s=2)
    (done,) = _wait(pool)
    assert not done.ok and done.failure == "timeout" and pool.info("w0")["pid"] != pid
