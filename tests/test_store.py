from __future__ import annotations

import pytest

from aotune.cache_db.identity import INTERPRETER, DeviceClass, normalize_product
from aotune.cache_db.schema import BestRow
from aotune.cache_db.store import Store, TrialRecord

from .helpers_db import postgres_reachable, postgres_schema_url

H100 = DeviceClass.from_properties("NVIDIA H100 80GB HBM3", 9, 0, 232448, 132)


def _record(config_key: str, status: str = "ok", median: float | None = 5.0, stage: str = "final") -> TrialRecord:
    return TrialRecord("selftest", "v1", H100, "M=1,N=2,K=3", {"M": 1, "N": 2, "K": 3}, config_key,
                       {"k": config_key}, status, stage=stage, median_us=median, p20_us=median, p80_us=median,
                       versions={"triton": "3.6.0", "torch": "2.x", "cuda": None})


def _exercise(store: Store) -> None:
    store.init()
    store.init()  # idempotent
    first = store.commit_trial(_record("a", median=5.0))
    assert store.commit_trial(_record("a", median=9.0)) == first  # never recorded twice
    store.commit_trial(_record("b", median=3.0))
    store.commit_trial(_record("c", status="crash", median=None))
    store.commit_trial(_record("a", median=4.0, stage="screen"))
    rows = store.trials("selftest", "v1", H100, "M=1,N=2,K=3", {"M": 1, "N": 2, "K": 3})
    assert [(r.config_key, r.stage, r.status) for r in rows] == [
        ("a", "final", "ok"), ("b", "final", "ok"), ("c", "final", "crash"), ("a", "screen", "ok")]
    assert rows[0].triton_version == "3.6.0"
    top = store.top_k("selftest", "v1", H100, "M=1,N=2,K=3", {"M": 1, "N": 2, "K": 3}, k=2, stage="final")
    assert [r.config_key for r in top] == ["b", "a"]
    ident = ("selftest", "v1", H100, "M=1,N=2,K=3", {"M": 1, "N": 2, "K": 3})
    assert not store.problem_done(*ident, "exhaustive")
    store.finish_problem(*ident, strategy="exhaustive", best=BestRow(config={"k": "b"}, median_us=3.0), job_id=None)
    store.finish_problem(*ident, strategy="exhaustive", best=BestRow(config={"k": "b"}, median_us=2.5), job_id=None)
    assert store.problem_done(*ident, "exhaustive")
    best = store.best("selftest")
    assert len(best) == 1 and best[0]["median_us"] == 2.5 and best[0]["device_key"] == H100.key


def test_store_on_sqlite(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    _exercise(store)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL at 127.0.0.1:5432 is not reachable")
def test_store_on_postgres() -> None:
    with postgres_schema_url() as url:
        store = Store(url)
        _exercise(store)
        store.engine.dispose()


def test_device_identity() -> None:
    assert normalize_product("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert H100.key == "nvidia/sm_90/h100-80gb-hbm3"
    assert DeviceClass.from_dict(H100.to_dict()) == H100
    assert INTERPRETER.arch == "interp"


def test_a_newer_schema_is_refused(tmp_path) -> None:
    from aotune.cache_db.schema import SCHEMA_VERSION, MetaRow

    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    store.init()
    with store.session() as session:
        session.get(MetaRow, "schema_version").value = str(SCHEMA_VERSION + 1)
        session.commit()
    with pytest.raises(RuntimeError, match="newer than this aotune"):
        Store(f"sqlite:///{tmp_path / 'new.db'}").init()
