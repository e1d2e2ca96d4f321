"""Bundles and the trial store: export the best configs, import a bundle, read a device's measured ranking.

Import rule: one best row per (kernel version, device class, problem). An incoming entry replaces the
stored one only when it ranks better (``bundle.entry_rank``: measured before transferred, then a lower
median); equal or worse entries change nothing, so importing a bundle twice is a no-op. A measured
entry is also recorded as an ``ok`` trial of stage ``bundle`` (so rankings and transfers see it);
compiled binaries are not stored in the database.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from aotune.cache_db.bundle import Bundle, DeviceModel, Entry, Environment, entry_rank, new_bundle
from aotune.cache_db.identity import DeviceClass
from aotune.cache_db.loader import canonical_json
from aotune.cache_db.schema import BestRow, DeviceRow, KernelRow, ProblemRow, TrialRow
from aotune.cache_db.store import Store

IMPORT_STAGE = "bundle"


@dataclass(frozen=True)
class ImportReport:
    """What an import did: entries added, replaced (the incoming one ranked better), kept (it did not)."""

    added: int = 0
    replaced: int = 0
    kept: int = 0


def export_from_store(store: Store, kernels: Sequence[str] = (), devices: Sequence[str] = ()) -> Bundle:
    """A bundle of the store's best configs (optionally only these kernels and devices: keys or products)."""
    rows = [r for r in store.best() if (not kernels or r["kernel"] in kernels)
            and (not devices or r["device_key"] in devices or r["device"]["product"] in devices)]
    envs = _trial_environments(store, [r["trial_id"] for r in rows if r["trial_id"] is not None])
    entries, device_models = [], {}
    for row in rows:
        device_models[row["device_key"]] = DeviceModel(**row["device"])
        entries.append(Entry(
            kernel=row["kernel"], kernel_version=row["kernel_version"], device=row["device_key"],
            problem_key=row["problem_key"], problem=row["problem"], config=row["config"],
            median_us=row["median_us"], p20_us=row["p20_us"], p80_us=row["p80_us"],
            default_median_us=row["default_median_us"], shared_bytes=row["shared_bytes"],
            source=row["source"] if row["source"] == "transferred" else "measured",
            environment=envs.get(row["trial_id"]),
        ))
    return new_bundle(entries, device_models)


def _trial_environments(store: Store, trial_ids: list[int]) -> dict[int, Environment]:
    if not trial_ids:
        return {}
    with store.session() as session:
        rows = session.execute(select(TrialRow.id, TrialRow.triton_version, TrialRow.torch_version,
                                      TrialRow.cuda_version).where(TrialRow.id.in_(trial_ids))).all()
    return {i: Environment(triton=t, torch=p, cuda=c) for i, t, p, c in rows}


def import_into_store(bundle: Bundle, store: Store) -> ImportReport:
    """Merge ``bundle`` into ``store`` (see the module docstring); returns what changed."""
    added = replaced = kept = 0
    for entry in bundle.entries:
        device = DeviceClass.from_dict(bundle.devices[entry.device].model_dump())
        kid = store.kernel_id(entry.kernel, entry.kernel_version)
        did = store.device_id(device)
        pid = store.problem_id(entry.kernel, entry.problem_key, dict(entry.problem))
        with store.session() as session, session.begin():
            row = session.scalars(select(BestRow).filter_by(kernel_id=kid, device_id=did, problem_id=pid)).first()
            if row is not None and entry_rank(_stored_entry(row, entry)) <= entry_rank(entry):
                kept += 1
                continue
            trial_id = _import_trial(session, entry, kid, did, pid) if entry.source == "measured" else None
            if row is None:
                session.add(BestRow(kernel_id=kid, device_id=did, problem_id=pid, **_best_fields(entry, trial_id)))
                added += 1
            else:
                for name, value in _best_fields(entry, trial_id).items():
                    setattr(row, name, value)
                replaced += 1
    return ImportReport(added, replaced, kept)


def _stored_entry(row: BestRow, like: Entry) -> Entry:
    return like.model_copy(update={"source": row.source if row.source == "transferred" else "measured",
                                   "median_us": row.median_us})


def _best_fields(entry: Entry, trial_id: int | None) -> dict[str, Any]:
    return {"trial_id": trial_id, "config": dict(entry.config), "median_us": entry.median_us,
            "p20_us": entry.p20_us, "p80_us": entry.p80_us, "default_median_us": entry.default_median_us,
            "shared_bytes": entry.shared_bytes, "source": entry.source}


def _import_trial(session: Any, entry: Entry, kid: int, did: int, pid: int) -> int:
    key = canonical_json(dict(entry.config))  # == aotune.kernels.space.config_key
    trial = session.scalars(select(TrialRow).filter_by(kernel_id=kid, device_id=did, problem_id=pid,
                                                       config_key=key, stage=IMPORT_STAGE)).first()
    env = entry.environment or Environment()
    if trial is None:
        trial = TrialRow(kernel_id=kid, device_id=did, problem_id=pid, config_key=key, config=dict(entry.config),
                         stage=IMPORT_STAGE, status="ok", timing_method="bundle")
        session.add(trial)
    trial.median_us, trial.p20_us, trial.p80_us = entry.median_us, entry.p20_us, entry.p80_us
    trial.shared_bytes = entry.shared_bytes
    trial.triton_version, trial.torch_version, trial.cuda_version = env.triton, env.torch, env.cuda
    session.flush()
    return trial.id


@dataclass(frozen=True)
class Ranked:
    """One problem measured on a device: its configs, fastest first (ok trials, best stage per config)."""

    kernel: str
    kernel_version: str
    device: DeviceClass
    problem_key: str
    problem: dict[str, Any]
    configs: list[tuple[dict[str, Any], float]]


def measured_rankings(store: Store, device: str, kernels: Sequence[str] = ()) -> list[Ranked]:
    """Per (kernel version, problem) measured on ``device`` (key or product): ok trials by median."""
    query = (select(TrialRow, KernelRow, DeviceRow, ProblemRow)
             .join(KernelRow, TrialRow.kernel_id == KernelRow.id)
             .join(DeviceRow, TrialRow.device_id == DeviceRow.id)
             .join(ProblemRow, TrialRow.problem_id == ProblemRow.id)
             .where(TrialRow.status == "ok", TrialRow.median_us.is_not(None))
             .where((DeviceRow.key == device) | (DeviceRow.product == device)))
    if kernels:
        query = query.where(KernelRow.name.in_(list(kernels)))
    with store.session() as session:
        rows = session.execute(query).all()
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for trial, kernel, dev, problem in rows:
        group = groups.setdefault((kernel.name, kernel.version, dev.key, problem.key), {
            "device": DeviceClass(dev.vendor, dev.arch, dev.product, dev.smem_per_block, dev.sm_count),
            "problem": problem.data, "best": {}})
        best = group["best"]
        if trial.config_key not in best or trial.median_us < best[trial.config_key][1]:
            best[trial.config_key] = (trial.config, trial.median_us)
    return [Ranked(k, v, g["device"], p, g["problem"], sorted(g["best"].values(), key=lambda c: c[1]))
            for (k, v, _d, p), g in sorted(groups.items())]
