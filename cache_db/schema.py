"""SQLAlchemy 2 schema of the trial store: workloads apart from records, every trial kept, failures kept.

Tables: kernels (name, version), devices (device classes), problems (kernel + canonical key), jobs,
trials (one row per measured/failed candidate and stage), problem_runs (a problem finished by a
strategy on a device class: lets a resumed job skip it) and best (the winner per kernel version,
device class and problem).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class KernelRow(Base):
    __tablename__ = "kernels"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeviceRow(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(256), unique=True)
    vendor: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(32))
    product: Mapped[str] = mapped_column(String(128))
    smem_per_block: Mapped[int] = mapped_column(Integer)
    sm_count: Mapped[int] = mapped_column(Integer)


class ProblemRow(Base):
    __tablename__ = "problems"
    __table_args__ = (UniqueConstraint("kernel_name", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kernel_name: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(512))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    grid: Mapped[str] = mapped_column(String(256))
    strategy: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")
    host: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("kernel_id", "device_id", "problem_id", "config_key", "stage"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    kernel_id: Mapped[int] = mapped_column(ForeignKey("kernels.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    config_key: Mapped[str] = mapped_column(String(1024))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    stage: Mapped[str] = mapped_column(String(16), default="final")
    status: Mapped[str] = mapped_column(String(32))
    median_us: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    p20_us: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    p80_us: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    times_us: Mapped[Optional[list[Any]]] = mapped_column(JSON, nullable=True)
    timing_method: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    error: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    message: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    shared_bytes: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    registers: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    spills: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    compile_seconds: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    host: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    worker: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    triton_version: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    torch_version: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    cuda_version: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProblemRunRow(Base):
    __tablename__ = "problem_runs"
    __table_args__ = (UniqueConstraint("kernel_id", "device_id", "problem_id", "strategy"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kernel_id: Mapped[int] = mapped_column(ForeignKey("kernels.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    strategy: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BestRow(Base):
    __tablename__ = "best"
    __table_args__ = (UniqueConstraint("kernel_id", "device_id", "problem_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kernel_id: Mapped[int] = mapped_column(ForeignKey("kernels.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    trial_id: Mapped[Optional[int]] = mapped_column(ForeignKey("trials.id"), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    median_us: Mapped[float] = mapped_column(Float)
    p20_us: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    p80_us: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    default_median_us: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    shared_bytes: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="measured")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MetaRow(Base):
    __tablename__ = "aotune_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
