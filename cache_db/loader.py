"""The runtime loader: which config for this kernel, this problem, this GPU (standard library only).

Sources, in order of precedence (the first source holding an answer wins):
  1. explicit bundles (``Loader(bundles=[...])`` or ``configure(bundles=[...])``),
  2. ``AOTUNE_BUNDLES``: files or folders of ``*.json`` bundles, separated by ``os.pathsep``,
  3. the bundles shipped in ``aotune.configs`` (``configs/bundles/*.json``),
  4. optionally a database: ``AOTUNE_LOADER_DB`` / ``db_url``. Only ``sqlite:///PATH`` URLs, read
     through the standard library's ``sqlite3`` (read only): a serving process never loads SQLAlchemy.
     Other URLs are reported once and skipped; export a bundle from them instead.

Lookup policy (``Loader.lookup``), tier by tier; every tier drops what does not fit the device's
shared memory (an entry's ``shared_bytes`` must be <= the device's ``smem_per_block``; an entry
without ``shared_bytes`` counts only if it was measured on a device with no more shared memory than
this one) and what the caller's ``check`` rejects for this problem:
  1. ``exact``: the same kernel version, device product and problem.
  2. ``nearest:F=v``: the kernel declares one bucketed problem field F (e.g. MoE tokens ``M``).
     Candidates match every other field exactly; the tuned value nearest to the requested one wins,
     distance measured in log2 (|log2 a - log2 b|) for positive values, absolute otherwise; a tie goes
     to the larger value. A request outside the tuned range gets the nearest end and the source says
     ``clamped:F=v`` instead: the loader never extrapolates silently.
  3. ``arch:sm_XY/product`` (then ``,nearest:``/``,clamped:`` as above): the same architecture,
     another product (the product with the closest SM count first).
  4. ``default``: the caller's default configs in order, the first whose shared memory is known to fit
     (from any bundle entry with that config on this arch, or the caller's ``fits`` callback).
     ``default:unchecked`` when nothing could tell; ``default:none-fits`` when every default was
     shown not to fit, ``default:none-valid`` when ``check`` rejected them all (then the first one
     is returned, with a warning: the launch reports the error).
A stale kernel version, a corrupt, truncated, tampered or newer-format bundle is reported once as a
``BundleWarning`` and skipped. The loader never raises into a serving process on a miss or a bad file.
Answers are memoized per (kernel, version, problem, device, bucketed field); ``defaults``, ``check``
and ``fits`` are assumed fixed per kernel version.
"""
from __future__ import annotations

import math
import os
import warnings
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

from aotune.cache_db.bundle_file import (  # noqa: F401 - FORMAT*, checksum and verify are re-exported
    FORMAT, FORMAT_VERSION, BundleError, canonical_json, checksum, read_json, sqlite_bundle, verify,
)
from aotune.cache_db.identity import DeviceClass

ENV_BUNDLES = "AOTUNE_BUNDLES"
ENV_DB = "AOTUNE_LOADER_DB"
Source = Union[str, os.PathLike, Mapping[str, Any]]
Check = Callable[[Mapping[str, Any]], Union[str, None]]
Fits = Callable[[Mapping[str, Any]], Union[bool, None]]
Defaults = Union[Sequence[Mapping[str, Any]], Callable[[], Sequence[Mapping[str, Any]]]]


class BundleWarning(UserWarning):
    """A bundle or database the loader skipped (corrupt, tampered, newer format, stale kernel)."""


def problem_id(problem: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Order-independent identity of a problem dict."""
    return tuple(sorted(problem.items()))


@dataclass(frozen=True)
class Answer:
    """A resolved config and where it came from (``source``: exact, nearest:M=8, arch:..., default)."""

    config: Mapping[str, Any]
    source: str
    origin: str | None = None
    shared_bytes: int | None = None
    median_us: float | None = None
    obtained: str | None = None  # the entry's own source: measured or transferred
    device_key: str | None = None
    binaries: tuple[Any, ...] = field(default=(), repr=False)


@dataclass
class _Entry:
    data: dict[str, Any]
    device: dict[str, Any]
    origin: str


_SCALARS = (str, int, float, bool, type(None))


def _valid_entry(e: Any, devices: Mapping[str, Any]) -> bool:
    try:
        device = devices[e["device"]]
        return (isinstance(e["kernel"], str) and isinstance(e["kernel_version"], str)
                and isinstance(e["problem"], dict) and isinstance(e["config"], dict)
                and all(isinstance(v, _SCALARS) for v in (*e["problem"].values(), *e["config"].values()))
                and all(isinstance(device[k], str) for k in ("vendor", "arch", "product"))
                and all(isinstance(device[k], int) for k in ("smem_per_block", "sm_count"))
                and (e.get("shared_bytes") is None or isinstance(e["shared_bytes"], int)))
    except (KeyError, TypeError):
        return False


def _default_sources() -> list[Source]:
    sources: list[Source] = []
    for part in os.environ.get(ENV_BUNDLES, "").split(os.pathsep):
        if part:
            sources.extend(_expand(Path(part)))
    if shipped_dir().is_dir():  # none shipped is not an error
        sources.extend(_expand(shipped_dir()))
    if os.environ.get(ENV_DB):
        sources.append(os.environ[ENV_DB])
    return sources


def shipped_dir() -> Path:
    """The folder of the bundles shipped with aotune (``aotune.configs``, ``bundles/``)."""
    try:
        from importlib.resources import files

        return Path(str(files("aotune.configs"))) / "bundles"
    except (ImportError, TypeError):
        return Path(__file__).resolve().parent.parent / "configs" / "bundles"


def _expand(path: Path) -> list[Source]:
    return sorted(path.glob("*.json")) if path.is_dir() else [path]


class Loader:
    """Answers config lookups from bundles (and optionally a SQLite database); see the module docstring."""

    def __init__(self, bundles: Sequence[Source] = (), *, db_url: str | None = None,
                 defaults: bool = True) -> None:
        """``bundles`` (paths, or already parsed bundle dicts) come first; ``defaults`` adds
        ``AOTUNE_BUNDLES``, the shipped bundles and ``AOTUNE_LOADER_DB``; ``db_url`` comes last."""
        self._explicit = list(bundles)
        self._db_url = db_url
        self._use_defaults = defaults
        self._index: dict[tuple[str, str, str], dict[tuple[Any, ...], _Entry]] | None = None
        self._arch: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self._smem: dict[tuple[str, str, str, str], int] = {}
        self._versions: dict[str, dict[str, set[str]]] = {}
        self._devices: dict[str, DeviceClass] = {}
        self._buckets: dict[tuple[Any, ...], list[tuple[Any, _Entry]]] = {}
        self._memo: dict[tuple[Any, ...], Answer] = {}
        self._warned: set[str] = set()

    # -- sources -----------------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        """Report ``message`` once per loader as a BundleWarning."""
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, BundleWarning, stacklevel=3)

    def _load(self) -> dict[tuple[str, str, str], dict[tuple[Any, ...], _Entry]]:
        if self._index is not None:
            return self._index
        index: dict[tuple[str, str, str], dict[tuple[Any, ...], _Entry]] = {}
        sources = list(self._explicit) + (_default_sources() if self._use_defaults else [])
        if self._db_url:
            sources.append(self._db_url)
        for source in sources:
            try:
                name, data = self._read(source)
            except BundleError as exc:
                self.warn(f"aotune loader: skipped {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - the loader never raises into a serving process
                self.warn(f"aotune loader: skipped {source}: {type(exc).__name__}: {exc}")
                continue
            self._add(index, name, data)
        self._index = index
        return index

    @staticmethod
    def _read(source: Source) -> tuple[str, Mapping[str, Any]]:
        if isinstance(source, Mapping):
            return str(source.get("name", "<bundle>")), verify(dict(source), "<bundle>")
        text = os.fspath(source)
        if "://" in text:
            return text, sqlite_bundle(text)
        return text, read_json(Path(text))

    def _add(self, index: dict[Any, dict[Any, _Entry]], name: str, data: Mapping[str, Any]) -> None:
        devices = data.get("devices") or {}
        bad = 0
        for raw in data.get("entries") or []:
            if not _valid_entry(raw, devices):
                bad += 1
                continue
            device = devices[raw["device"]]
            kernel, version = raw["kernel"], raw["kernel_version"]
            if raw["device"] not in self._devices:
                self._devices[raw["device"]] = DeviceClass.from_dict(device)
            self._versions.setdefault(kernel, {}).setdefault(name, set()).add(version)
            slot = index.setdefault((kernel, version, raw["device"]), {})
            entry = _Entry(raw, device, name)
            if slot.setdefault(problem_id(raw["problem"]), entry) is entry and len(slot) == 1:
                self._arch.setdefault((kernel, version, device["arch"]), []).append(
                    {"key": raw["device"], **device})
            if raw.get("shared_bytes") is not None:
                ckey = canonical_json(raw["config"])
                self._smem.setdefault((kernel, version, device["arch"], ckey), raw["shared_bytes"])
        if bad:
            self.warn(f"aotune loader: {name}: skipped {bad} malformed entr{'y' if bad == 1 else 'ies'}")

    def devices(self) -> dict[str, DeviceClass]:
        """The device classes the sources hold entries for, by key."""
        self._load()
        return dict(self._devices)

    # -- lookup ------------------------------------------------------------------------------------
    def lookup(self, kernel: str, version: str, problem: Mapping[str, Any], device: DeviceClass, *,
               bucketed: str | tuple[str, ...] = (), defaults: Defaults = (),
               check: Check | None = None, fits: Fits | None = None) -> Answer:
        """The config for ``kernel`` at ``version`` on ``problem`` and ``device``; never raises on a miss.

        ``bucketed``: the bucketed problem field (or fields, tried in order); ``defaults``: the
        fallback configs (or a function returning them, called only when needed); ``check``: returns
        why a config is unusable for this problem (None when usable); ``fits``: whether a config fits
        the device's shared memory (None when unknown).
        """
        key = (kernel, version, tuple(problem.items()), device, bucketed)
        answer = self._memo.get(key)
        if answer is None:
            fields = (bucketed,) if isinstance(bucketed, str) else tuple(bucketed)
            answer = self._memo[key] = self._resolve(kernel, version, problem, device, fields, defaults,
                                                     check, fits)
        return answer

    def _resolve(self, kernel: str, version: str, problem: Mapping[str, Any], device: DeviceClass,
                 bucketed: tuple[str, ...], defaults: Defaults, check: Check | None,
                 fits: Fits | None) -> Answer:
        index = self._load()
        self._warn_stale(kernel, version)
        usable = _usable(device, check)
        found = self._search(index, kernel, version, device.key, problem, bucketed, usable)
        if found is not None:
            return _answer(*found)
        peers = [d for d in self._arch.get((kernel, version, device.arch), [])
                 if d["key"] != device.key and d["vendor"] == device.vendor]
        for peer in sorted(peers, key=lambda d: (abs(d["sm_count"] - device.sm_count), d["key"])):
            found = self._search(index, kernel, version, peer["key"], problem, bucketed, usable)
            if found is not None:
                entry, how = found
                tier = f"arch:{device.arch}/{peer['product']}"
                return _answer(entry, tier if how == "exact" else f"{tier},{how}")
        return self._default(kernel, version, problem, device, defaults, check, fits)

    def _search(self, index: Mapping[Any, Mapping[Any, _Entry]], kernel: str, version: str, device_key: str,
                problem: Mapping[str, Any], bucketed: tuple[str, ...],
                usable: Callable[[_Entry], bool]) -> tuple[_Entry, str] | None:
        slot = index.get((kernel, version, device_key))
        if not slot:
            return None
        entry = slot.get(problem_id(problem))
        if entry is not None and usable(entry):
            return entry, "exact"
        for name in bucketed:
            value = problem.get(name)
            if not _numeric(value):
                continue
            ladder = self._ladder(slot, (kernel, version, device_key), problem, name)
            if not ladder:
                continue
            low, high = ladder[0][0], ladder[-1][0]
            for tuned, entry in sorted(ladder, key=lambda item: (_distance(item[0], value), -item[0])):
                if usable(entry):
                    word = "nearest" if low <= value <= high else "clamped"
                    return entry, f"{word}:{name}={tuned}"
        return None

    def _ladder(self, slot: Mapping[Any, _Entry], where: tuple[str, str, str], problem: Mapping[str, Any],
                bucketed: str) -> list[tuple[Any, _Entry]]:
        """The tuned problems of ``slot`` that differ from ``problem`` only in ``bucketed``, by that value.

        Built once per (slot, field, other fields), then a dict lookup. Slot keys are problem ids, sorted by
        field name, so a match is the query's other fields with ``bucketed`` at one known position."""
        rest = tuple(item for item in problem_id(problem) if item[0] != bucketed)
        key = (*where, bucketed, rest)
        ladder = self._buckets.get(key)
        if ladder is None:
            at = bisect_left([name for name, _ in rest], bucketed)
            head, tail, size = rest[:at], rest[at:], len(rest) + 1
            ladder = sorted(((pid[at][1], entry) for pid, entry in slot.items()
                             if len(pid) == size and pid[at][0] == bucketed and _numeric(pid[at][1])
                             and pid[:at] == head and pid[at + 1:] == tail), key=itemgetter(0))
            self._buckets[key] = ladder
        return ladder

    def _default(self, kernel: str, version: str, problem: Mapping[str, Any], device: DeviceClass,
                 defaults: Defaults, check: Check | None, fits: Fits | None) -> Answer:
        if callable(defaults):
            defaults = defaults()
        if not defaults:
            return Answer(MappingProxyType({}), "default:none")
        valid = [c for c in defaults if check is None or not check(c)]
        if not valid:
            self.warn(f"aotune loader: no default config of {kernel} is valid for {dict(problem)}")
            return Answer(MappingProxyType(dict(defaults[0])), "default:none-valid")
        unknown: Mapping[str, Any] | None = None
        for config in valid:
            known = self._smem.get((kernel, version, device.arch, canonical_json(dict(config))))
            ok = known <= device.smem_per_block if known is not None else (fits(config) if fits else None)
            if ok:
                return Answer(MappingProxyType(dict(config)), "default", shared_bytes=known)
            if ok is None and unknown is None:
                unknown = config
        if unknown is not None:
            return Answer(MappingProxyType(dict(unknown)), "default:unchecked")
        self.warn(f"aotune loader: no default config of {kernel} fits {device.key} "
                  f"({device.smem_per_block} B of shared memory)")
        return Answer(MappingProxyType(dict(defaults[0])), "default:none-fits")

    def _warn_stale(self, kernel: str, version: str) -> None:
        for name, versions in self._versions.get(kernel, {}).items():
            if version not in versions:
                self.warn(f"aotune loader: {name} holds configs of {kernel} version(s) {sorted(versions)}, "
                          f"the running kernel is version {version}: ignored (re-tune or re-export)")

    def clear(self) -> None:
        """Forget the loaded sources and the memo (they are read again at the next lookup)."""
        self.__init__(self._explicit, db_url=self._db_url, defaults=self._use_defaults)  # type: ignore[misc]


def _usable(device: DeviceClass, check: Check | None) -> Callable[[_Entry], bool]:
    def usable(entry: _Entry) -> bool:
        shared = entry.data.get("shared_bytes")
        limit = device.smem_per_block
        if (shared if shared is not None else entry.device["smem_per_block"]) > limit:
            return False
        return check is None or not check(entry.data["config"])
    return usable


def _numeric(value: Any) -> bool:
    """A value a problem can be bucketed along: an int or a float, not a bool and not NaN."""
    if isinstance(value, float):
        return not math.isnan(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _distance(a: float, b: float) -> float:
    if a > 0 and b > 0:
        return abs(math.log2(a) - math.log2(b))
    return abs(a - b)


def _answer(entry: _Entry, source: str) -> Answer:
    data = entry.data
    return Answer(MappingProxyType(dict(data["config"])), source, entry.origin, data.get("shared_bytes"),
                  data.get("median_us"), data.get("source"), data["device"], tuple(data.get("binaries") or ()))


_DEFAULT: list[Loader] = []


def default_loader() -> Loader:
    """The process-wide loader (environment and shipped bundles), created at first use."""
    if not _DEFAULT:
        _DEFAULT.append(Loader())
    return _DEFAULT[0]


def configure(bundles: Sequence[Source] = (), *, db_url: str | None = None, defaults: bool = True) -> Loader:
    """Replace the process-wide loader (explicit bundles first); memoized answers are dropped."""
    _DEFAULT[:] = [Loader(bundles, db_url=db_url, defaults=defaults)]
    _GENERATION[0] += 1
    return _DEFAULT[0]


_GENERATION = [0]


def generation() -> int:
    """How many times ``configure`` replaced the process-wide loader (callers key their memos on it)."""
    return _GENERATION[0]
