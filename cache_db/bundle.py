"""Bundles: the tuned configs (and optionally compiled kernels) that leave the database as one JSON file.

A bundle holds its format and format version, its creation time, the kernel versions and device
classes it covers, the environment that wrote it, and one entry per (kernel version, device class,
problem): the config, its measured time and spread, the default config's time, its shared memory,
and how it was obtained (``measured`` on that device, or ``transferred``: ranked on another device,
compiled for this target and checked to fit). Entries may carry compiled kernels (Triton cache
entries, base64) per target arch and Triton version. A sha256 checksum over the canonical JSON
(``aotune.cache_db.loader.canonical_json``, everything but the checksum) covers it all.

The schema is this module's pydantic model; ``configs/bundle.schema.json`` is its published JSON Schema
(``python -m aotune.cache_db.bundle`` rewrites it). The runtime reads bundles with the stdlib loader.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from aotune.cache_db.loader import FORMAT, FORMAT_VERSION, BundleError, checksum, read_json, verify

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Environment(_Model):
    """Software versions a result was obtained with (None: not recorded)."""

    triton: Optional[str] = None
    torch: Optional[str] = None
    cuda: Optional[str] = None


class DeviceModel(_Model):
    """A device class (``aotune.cache_db.identity.DeviceClass``)."""

    vendor: str
    arch: str = Field(description="sm_90, sm_120, ... ('interp' for the CPU interpreter)")
    product: str = Field(description="normalized product name; 'generic' for a transfer target")
    smem_per_block: int = Field(ge=0, description="opt-in shared memory per block, bytes")
    sm_count: int = Field(ge=0)


class KernelRef(_Model):
    name: str
    version: str = Field(description="hash of the kernel's source: a changed kernel is a new version")


class LaunchBinary(_Model):
    """One compiled launch: a Triton cache folder (its name) and its files, base64."""

    dir: str
    files: dict[str, str]


class Binary(_Model):
    """The compiled launches of one entry for one target arch and Triton version, and (when exported where
    the CUDA driver is installed) the host modules Triton builds to launch them: ``cuda_utils`` and the
    per-signature ``__triton_launcher``, used only by processes of the same platform and Python ABI."""

    target: str
    triton: str
    launches: list[LaunchBinary]


class Entry(_Model):
    """The best config of one (kernel version, device class, problem)."""

    kernel: str
    kernel_version: str
    device: str = Field(description="key into the bundle's devices")
    problem_key: str
    problem: dict[str, Scalar]
    config: dict[str, Scalar]
    median_us: float = Field(description="measured median; for a transferred entry, on the source device")
    p20_us: Optional[float] = None
    p80_us: Optional[float] = None
    default_median_us: Optional[float] = Field(None, description="the space default's median, same device")
    shared_bytes: Optional[int] = Field(None, ge=0, description="shared memory per block on this device's arch")
    source: Literal["measured", "transferred"] = "measured"
    transferred_from: Optional[str] = Field(None, description="device key the ranking came from")
    environment: Optional[Environment] = None
    binaries: list[Binary] = Field(default_factory=list)

    @property
    def ident(self) -> tuple[str, str, str, str]:
        """What two entries must share to be 'the same thing'."""
        return self.kernel, self.kernel_version, self.device, self.problem_key


class Bundle(_Model):
    """One bundle file."""

    format: Literal["aotune-bundle"] = FORMAT
    format_version: int = FORMAT_VERSION
    created_at: str
    kernels: list[KernelRef]
    devices: dict[str, DeviceModel]
    environment: Environment
    entries: list[Entry]
    checksum: str = Field(description="sha256 of the canonical JSON of everything else")


def entry_rank(entry: Entry) -> tuple[int, float]:
    """Sort key of competing entries for the same thing: measured before transferred, then faster."""
    return (0 if entry.source == "measured" else 1, entry.median_us if math.isfinite(entry.median_us) else math.inf)


def new_bundle(entries: Iterable[Entry], devices: dict[str, DeviceModel], environment: Environment | None = None,
               created_at: str | None = None) -> Bundle:
    """A bundle of ``entries`` (sorted, checksummed); ``devices`` must name every entry's device."""
    ordered = sorted(entries, key=lambda e: e.ident)
    missing = {e.device for e in ordered} - set(devices)
    if missing:
        raise BundleError(f"entries name devices the bundle does not describe: {sorted(missing)}")
    kernels = sorted({(e.kernel, e.kernel_version) for e in ordered})
    body = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kernels": [{"name": n, "version": v} for n, v in kernels],
        "devices": {k: devices[k].model_dump(mode="json") for k in sorted({e.device for e in ordered})},
        "environment": (environment or current_environment()).model_dump(mode="json"),
        "entries": [e.model_dump(mode="json") for e in ordered],
    }
    body["checksum"] = checksum(body)
    return Bundle.model_validate(body)


def to_dict(bundle: Bundle) -> dict:
    """The bundle as plain JSON data (what the file holds)."""
    return bundle.model_dump(mode="json")


def parse(data: object, name: str = "<bundle>") -> Bundle:
    """Verify (format, version, checksum) and validate bundle data; BundleError saying why not."""
    verified = verify(data, name)
    try:
        return Bundle.model_validate(verified)
    except ValidationError as exc:
        raise BundleError(f"{name}: does not follow the bundle schema:\n{exc}") from None


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read, verify and validate a bundle file; BundleError with a clear message for a bad file."""
    return parse(read_json(Path(path)), str(path))


def write_bundle(bundle: Bundle, path: str | os.PathLike) -> Path:
    """Write ``bundle`` as JSON (atomically); the checksum is re-verified first."""
    data = to_dict(bundle)
    verify(data, "bundle to write")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(target)
    return target


def merge(bundles: Sequence[Bundle]) -> Bundle:
    """Combine bundles: one entry per (kernel version, device, problem), the best by ``entry_rank``
    (earlier bundles win ties); binaries of the losing copy of the same config are kept."""
    best: dict[tuple[str, str, str, str], Entry] = {}
    devices: dict[str, DeviceModel] = {}
    for bundle in bundles:
        devices.update({k: v for k, v in bundle.devices.items() if k not in devices})
        for entry in bundle.entries:
            old = best.get(entry.ident)
            if old is None or entry_rank(entry) < entry_rank(old):
                best[entry.ident] = _with_binaries(entry, old)
            else:
                best[entry.ident] = _with_binaries(old, entry)
    return new_bundle(best.values(), devices)


def _with_binaries(winner: Entry, loser: Entry | None) -> Entry:
    if loser is None or loser.config != winner.config:
        return winner
    have = {(b.target, b.triton) for b in winner.binaries}
    extra = [b for b in loser.binaries if (b.target, b.triton) not in have]
    return winner.model_copy(update={"binaries": winner.binaries + extra}) if extra else winner


def current_environment() -> Environment:
    """Triton, torch and CUDA versions of this process (None for what is not installed)."""
    versions: dict[str, Optional[str]] = {"triton": None, "torch": None, "cuda": None}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        import torch

        versions["torch"], versions["cuda"] = torch.__version__, torch.version.cuda
    except ImportError:
        pass
    return Environment(**versions)


def json_schema() -> dict:
    """The published JSON Schema of a bundle."""
    schema = Bundle.model_json_schema()
    schema["$id"] = "https://aotune.dev/schemas/bundle.schema.json"
    schema["title"] = "aotune bundle"
    return schema


SCHEMA_PATH = Path(__file__).resolve().parent.parent / "configs" / "bundle.schema.json"


def write_schema(path: str | os.PathLike = SCHEMA_PATH) -> Path:
    """Write the JSON Schema file (``configs/bundle.schema.json`` by default)."""
    target = Path(path)
    target.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return target


if __name__ == "__main__":
    print(write_schema())
