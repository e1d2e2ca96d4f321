"""The trial store: a handful of verbs over the schema (commit a workload, commit a record, top-k, best).

SQLite by default (a file under the user's data directory, WAL mode); any SQLAlchemy URL through
``--db`` or ``AOTUNE_DB``. Every trial is committed as it finishes; the driver is the only writer.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aotune.cache_db.identity import DeviceClass
from aotune.cache_db.schema import (SCHEMA_VERSION, Base, BestRow, DeviceRow, JobRow, KernelRow, MetaRow,
                                    ProblemRow, ProblemRunRow, TrialRow, utcnow)


def default_url() -> str:
    """``AOTUNE_DB`` if set, else SQLite at ``$XDG_DATA_HOME/aotune/aotune.db`` (~/.local/share)."""
    if os.environ.get("AOTUNE_DB"):
        return os.environ["AOTUNE_DB"]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "aotune"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'aotune.db'}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode, a busy timeout and foreign keys."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    return engine


@dataclass
class TrialRecord:
    """One finished trial as the driver commits it."""

    kernel: str
    kernel_version: str
    device: DeviceClass
    problem_key: str
    problem: dict[str, Any]
    config_key: str
    config: dict[str, Any]
    status: str
    stage: str = "final"
    median_us: Optional[float] = None
    p20_us: Optional[float] = None
    p80_us: Optional[float] = None
    times_us: Optional[list[float]] = None
    timing_method: Optional[str] = None
    error: Optional[float] = None
    message: Optional[str] = None
    shared_bytes: Optional[int] = None
    registers: Optional[int] = None
    spills: Optional[int] = None
    compile_seconds: Optional[float] = None
    host: Optional[str] = None
    worker: Optional[str] = None
    versions: dict[str, Optional[str]] = field(default_factory=dict)
    job_id: Optional[int] = None


class Store:
    """The database of kernels, devices, problems, jobs, trials and best configs."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._ids: dict[tuple[Any, ...], int] = {}

    def init(self) -> None:
        """Create the tables (idempotent) and record the schema version.

        Schema version 1 is the first one: there is nothing to migrate from yet. A database written by a
        newer aotune (a higher version) is refused with a message rather than written with the old schema.
        """
        Base.metadata.create_all(self.engine)
        with self._session.begin() as session:
            row = session.get(MetaRow, "schema_version")
            if row is None:
                session.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row.value) > SCHEMA_VERSION:
                raise RuntimeError(f"{self.engine.url.render_as_string(hide_password=True)}: database schema "
                                   f"version {row.value} is newer than this aotune's ({SCHEMA_VERSION}); upgrade aotune")

    def session(self) -> Session:
        return self._session()

    # -- workloads ---------------------------------------------------------------------------------
    def _get_or_create(self, cache_key: tuple[Any, ...], model: type, lookup: dict[str, Any],
                       extra: dict[str, Any]) -> int:
        if cache_key in self._ids:
            return self._ids[cache_key]
        for _attempt in range(2):
            with self._session() as session:
                row = session.scalars(select(model).filter_by(**lookup)).first()
                if row is None:
                    row = model(**lookup, **extra)
                    session.add(row)
                    try:
                        session.commit()
                    except IntegrityError:  # another writer created it first
                        session.rollback()
                        continue
                self._ids[cache_key] = row.id
                return row.id
        raise RuntimeError(f"could not create {model.__tablename__} row {lookup}")

    def kernel_id(self, name: str, version: str) -> int:
        return self._get_or_create(("k", name, version), KernelRow, {"name": name, "version": version}, {})

    def device_id(self, device: DeviceClass) -> int:
        extra = {k: v for k, v in device.to_dict().items()}
        return self._get_or_create(("d", device.key), DeviceRow, {"key": device.key}, extra)

    def problem_id(self, kernel_name: str, key: str, data: dict[str, Any]) -> int:
        return self._get_or_create(("p", kernel_name, key), ProblemRow, {"kernel_name": kernel_name, "key": key},
                                   {"data": data})

    def start_job(self, grid: str, strategy: str) -> int:
        with self._session.begin() as session:
            job = JobRow(grid=grid, strategy=strategy, host=socket.gethostname())
            session.add(job)
            session.flush()
            return job.id

    def finish_job(self, job_id: int, status: str = "done") -> None:
        with self._session.begin() as session:
            job = session.get(JobRow, job_id)
            if job is not None:
                job.status, job.finished_at = status, utcnow()

    # -- records -----------------------------------------------------------------------------------
    def commit_trial(self, rec: TrialRecord) -> int:
        """Insert one trial and commit. A trial already recorded (same workload, config, stage) is kept."""
        ids = self._workload_ids(rec.kernel, rec.kernel_version, rec.device, rec.problem_key, rec.problem)
        row = TrialRow(
            job_id=rec.job_id, kernel_id=ids[0], device_id=ids[1], problem_id=ids[2], config_key=rec.config_key,
            config=rec.config, stage=rec.stage, status=rec.status, median_us=rec.median_us, p20_us=rec.p20_us,
            p80_us=rec.p80_us, times_us=rec.times_us, timing_method=rec.timing_method, error=rec.error,
            message=rec.message, shared_bytes=rec.shared_bytes, registers=rec.registers, spills=rec.spills,
            compile_seconds=rec.compile_seconds, host=rec.host, worker=rec.worker,
            triton_version=rec.versions.get("triton"), torch_version=rec.versions.get("torch"),
            cuda_version=rec.versions.get("cuda"),
        )
        with self._session() as session:
            session.add(row)
            try:
                session.commit()
                return row.id
            except IntegrityError:
                session.rollback()
                existing = session.scalars(select(TrialRow).filter_by(
                    kernel_id=ids[0], device_id=ids[1], problem_id=ids[2], config_key=rec.config_key,
                    stage=rec.stage)).one()
                return existing.id

    def _workload_ids(self, kernel: str, version: str, device: DeviceClass, key: str,
                      data: dict[str, Any]) -> tuple[int, int, int]:
        return self.kernel_id(kernel, version), self.device_id(device), self.problem_id(kernel, key, data)

    def trials(self, kernel: str, version: str, device: DeviceClass, problem_key: str,
               problem: dict[str, Any]) -> list[TrialRow]:
        """Every recorded trial of one workload (all stages, all statuses)."""
        kid, did, pid = self._workload_ids(kernel, version, device, problem_key, problem)
        with self._session() as session:
            return list(session.scalars(select(TrialRow).filter_by(kernel_id=kid, device_id=did, problem_id=pid)
                                        .order_by(TrialRow.id)))

    def top_k(self, kernel: str, version: str, device: DeviceClass, problem_key: str, problem: dict[str, Any],
              k: int = 5, stage: str | None = None) -> list[TrialRow]:
        """The ``k`` fastest ok trials of a workload (optionally of one stage)."""
        rows = [r for r in self.trials(kernel, version, device, problem_key, problem)
                if r.status == "ok" and r.median_us is not None and (stage is None or r.stage == stage)]
        return sorted(rows, key=lambda r: r.median_us)[:k]

    # -- finished problems and best configs ---------------------------------------------------------
    def problem_done(self, kernel: str, version: str, device: DeviceClass, problem_key: str,
                     problem: dict[str, Any], strategy: str) -> bool:
        kid, did, pid = self._workload_ids(kernel, version, device, problem_key, problem)
        with self._session() as session:
            return session.scalars(select(ProblemRunRow).filter_by(
                kernel_id=kid, device_id=did, problem_id=pid, strategy=strategy)).first() is not None

    def finish_problem(self, kernel: str, version: str, device: DeviceClass, problem_key: str,
                       problem: dict[str, Any], strategy: str, best: BestRow | None, job_id: int | None) -> None:
        """Record the problem as finished and store its best config, in one transaction.

        Another driver finishing the same problem at the same moment makes the insert collide: then the
        transaction is retried once and finds the other's rows (the later best wins).
        """
        kid, did, pid = self._workload_ids(kernel, version, device, problem_key, problem)
        for attempt in range(2):
            try:
                self._finish_once(kid, did, pid, strategy, best, job_id)
                return
            except IntegrityError:
                if attempt:
                    raise

    def _finish_once(self, kid: int, did: int, pid: int, strategy: str, best: BestRow | None,
                     job_id: int | None) -> None:
        with self._session.begin() as session:
            if best is not None:
                row = BestRow(kernel_id=kid, device_id=did, problem_id=pid, trial_id=best.trial_id,
                              config=best.config, median_us=best.median_us, p20_us=best.p20_us, p80_us=best.p80_us,
                              default_median_us=best.default_median_us, shared_bytes=best.shared_bytes,
                              source=best.source or "measured")
                self._upsert_best(session, row)
            exists = session.scalars(select(ProblemRunRow).filter_by(
                kernel_id=kid, device_id=did, problem_id=pid, strategy=strategy)).first()
            if exists is None:
                session.add(ProblemRunRow(kernel_id=kid, device_id=did, problem_id=pid, strategy=strategy,
                                          job_id=job_id))

    @staticmethod
    def _upsert_best(session: Session, best: BestRow) -> None:
        row = session.scalars(select(BestRow).filter_by(
            kernel_id=best.kernel_id, device_id=best.device_id, problem_id=best.problem_id)).first()
        if row is None:
            session.add(best)
            return
        for name in ("trial_id", "config", "median_us", "p20_us", "p80_us", "default_median_us", "shared_bytes",
                     "source"):
            setattr(row, name, getattr(best, name))
        row.updated_at = utcnow()

    def best(self, kernel: str | None = None, device_key: str | None = None) -> list[dict[str, Any]]:
        """Best configs, joined with their kernel, device and problem, as plain dicts."""
        query = (select(BestRow, KernelRow, DeviceRow, ProblemRow)
                 .join(KernelRow, BestRow.kernel_id == KernelRow.id)
                 .join(DeviceRow, BestRow.device_id == DeviceRow.id)
                 .join(ProblemRow, BestRow.problem_id == ProblemRow.id))
        if kernel:
            query = query.where(KernelRow.name == kernel)
        if device_key:
            query = query.where(DeviceRow.key == device_key)
        with self._session() as session:
            rows = session.execute(query.order_by(KernelRow.name, DeviceRow.key, ProblemRow.key)).all()
        return [_best_dict(b, k, d, p) for b, k, d, p in rows]


def _best_dict(best: BestRow, kernel: KernelRow, device: DeviceRow, problem: ProblemRow) -> dict[str, Any]:
    return {
        "kernel": kernel.name, "kernel_version": kernel.version,
        "device": {"vendor": device.vendor, "arch": device.arch, "product": device.product,
                   "smem_per_block": device.smem_per_block, "sm_count": device.sm_count},
        "device_key": device.key, "problem_key": problem.key, "problem": problem.data, "config": best.config,
        "median_us": best.median_us, "p20_us": best.p20_us, "p80_us": best.p80_us,
        "default_median_us": best.default_median_us, "shared_bytes": best.shared_bytes, "source": best.source,
        "trial_id": best.trial_id,
    }
