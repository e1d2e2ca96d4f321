"""The bundle file format, on the runtime path (standard library only): canonical JSON, checksum,
verification of a file, and a SQLite database read as a bundle.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FORMAT = "aotune-bundle"
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A bundle that cannot be used; the message says why."""


def canonical_json(data: Any) -> str:
    """The canonical serialization the checksum covers: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def checksum(data: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a bundle without its ``checksum`` field."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def verify(data: Any, name: str) -> dict[str, Any]:
    """The bundle dict if its format, version and checksum are right; BundleError saying why otherwise."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{name}: not an aotune bundle (no 'format': {FORMAT!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"{name}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"{name}: format version {version} is newer than this aotune reads ({FORMAT_VERSION}); "
                          "upgrade aotune")
    expected = data.get("checksum")
    try:
        actual = checksum(data)
    except (TypeError, ValueError) as exc:  # NaN/inf or values JSON cannot hold: never written by aotune
        raise BundleError(f"{name}: holds values a bundle cannot contain ({exc})") from None
    if expected != actual:
        raise BundleError(f"{name}: checksum mismatch, the file was changed after it was written "
                          f"(recorded {str(expected)[:16]}..., content hashes to {actual[:16]}...)")
    return data


def read_json(path: Path) -> dict[str, Any]:
    """Parse and verify one bundle file; BundleError for unreadable, corrupt or truncated files."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON, the file is corrupt or truncated ({exc})") from None
    return verify(data, str(path))


def sqlite_bundle(url: str) -> dict[str, Any]:
    """The best configs of a SQLite database, in bundle form (read only, stdlib sqlite3)."""
    if not url.startswith("sqlite:///"):
        raise BundleError(f"{url}: the runtime loader reads only sqlite:/// databases; export a bundle instead")
    import sqlite3

    path = url.removeprefix("sqlite:///")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT k.name, k.version, d.key, d.vendor, d.arch, d.product, d.smem_per_block, d.sm_count, "
                "p.key, p.data, b.config, b.median_us, b.shared_bytes, b.source FROM best b "
                "JOIN kernels k ON b.kernel_id = k.id JOIN devices d ON b.device_id = d.id "
                "JOIN problems p ON b.problem_id = p.id").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise BundleError(f"{url}: cannot read the database ({exc})") from None
    devices: dict[str, Any] = {}
    entries = []
    for (name, version, dkey, vendor, arch, product, smem, sms, pkey, pdata, config, median, shared, how) in rows:
        devices[dkey] = {"vendor": vendor, "arch": arch, "product": product, "smem_per_block": smem,
                         "sm_count": sms}
        try:
            problem, parsed = json.loads(pdata), json.loads(config)
        except (TypeError, ValueError):
            continue  # a damaged row: _add reports the count of skipped entries
        entries.append({"kernel": name, "kernel_version": version, "device": dkey, "problem_key": pkey,
                        "problem": problem, "config": parsed, "median_us": median, "shared_bytes": shared,
                        "source": how})
    return {"devices": devices, "entries": entries}
