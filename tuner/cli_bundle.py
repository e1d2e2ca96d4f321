"""``aotune bundle export|import|inspect|merge|transfer`` and ``aotune query``.

Mounted by ``tuner/cli.py``: ``app.add_typer(bundle_app, name="bundle")`` and
``app.command("query")(query_command)``. ``query`` answers exactly as a serving process would: it
builds the same loader (explicit bundles, AOTUNE_BUNDLES, shipped bundles, a database) and calls the
runtime's ``resolve``; only the shared-memory check of a fallback default compiles ahead of time for
the device's arch instead of on a live GPU.
"""
from __future__ import annotations

import base64
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from aotune.cache_db import loader as runtime_loader
from aotune.cache_db.bundle import (Binary, Bundle, DeviceModel, Entry, LaunchBinary, merge, new_bundle,
                                    read_bundle, to_dict, write_bundle)
from aotune.cache_db.identity import INTERPRETER, INTERPRETER_ARCH, DeviceClass, normalize_product
from aotune.cache_db.loader import BundleError

bundle_app = typer.Typer(help="Bundles: ship tuned configs (and compiled kernels) to serving processes.",
                         no_args_is_help=True)
console = Console()
DB_HELP = "SQLAlchemy URL (default: AOTUNE_DB or SQLite in the data dir)."


def _store(db: Optional[str]) -> Any:
    from aotune.cache_db.store import Store

    store = Store(db)
    store.init()
    return store


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def binary_for(kernel: str, problem: dict[str, Any], config: dict[str, Any], target: str) -> Binary | None:
    """The compiled launches of one config for ``target``, or None when it does not compile or fit."""
    from aotune.tuner.feasibility import compile_candidate

    return binary_of(compile_candidate(kernel, problem, config, target, keep_artifacts=True,
                                       host_modules=True), target)


def binary_of(result: Any, target: str) -> Binary | None:
    """A CompileResult's Triton cache entries as a bundle Binary (metadata, cubin and group files only)."""
    import triton

    if not result.fits or not result.artifacts or any("__dir__" not in a for a in result.artifacts):
        return None
    launches = [LaunchBinary(dir=files["__dir__"].decode(), files={
        name: base64.b64encode(data).decode() for name, data in sorted(files.items())
        if name != "__dir__" and name.endswith((".json", ".cubin", ".so"))}) for files in result.artifacts]
    return Binary(target=target, triton=triton.__version__, launches=launches)


def _with_binaries(bundle: Bundle) -> Bundle:
    entries = []
    for entry in bundle.entries:
        arch = bundle.devices[entry.device].arch
        binary = None if arch == INTERPRETER_ARCH else binary_for(entry.kernel, dict(entry.problem),
                                                                  dict(entry.config), arch)
        entries.append(entry.model_copy(update={"binaries": [binary]}) if binary else entry)
    return new_bundle(entries, dict(bundle.devices))


@bundle_app.command("export")
def export_command(
    out: str = typer.Option(..., "--out", "-o", help="Bundle file to write."),
    kernel: Optional[list[str]] = typer.Option(None, "--kernel", "-k", help="Only these kernels (repeat)."),
    device: Optional[list[str]] = typer.Option(None, "--device", "-d", help="Only these devices: key or product."),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
    binaries: bool = typer.Option(False, "--binaries", help="Attach compiled kernels for each entry's arch."),
) -> None:
    """Write the database's best configs into one bundle file."""
    from aotune.cache_db.bundle_store import export_from_store

    bundle = export_from_store(_store(db), kernel or (), device or ())
    if binaries:
        bundle = _with_binaries(bundle)
    write_bundle(bundle, out)
    console.print(f"wrote {len(bundle.entries)} entries ({len(bundle.devices)} device classes) to {out}")
    if binaries:
        from aotune.tuner.host_stubs import cuda_driver_present

        if not cuda_driver_present():
            console.print("note: no CUDA driver here, so the binaries carry cubins only: a first launch will "
                          "still build Triton's host launch modules with the C compiler (export on a GPU "
                          "machine to include them)")


@bundle_app.command("import")
def import_command(
    file: str = typer.Argument(..., help="Bundle file."),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """Merge a bundle into the database (the faster of two measurements wins; nothing is duplicated)."""
    from aotune.cache_db.bundle_store import import_into_store

    try:
        bundle = read_bundle(file)
    except BundleError as exc:
        raise _fail(f"refused: {exc}") from None
    report = import_into_store(bundle, _store(db))
    console.print(f"imported {file}: {report.added} added, {report.replaced} replaced (faster), "
                  f"{report.kept} kept (stored one as fast or faster)")


@bundle_app.command("inspect")
def inspect_command(file: str = typer.Argument(..., help="Bundle file.")) -> None:
    """Print a readable summary of a bundle (verifies its checksum)."""
    try:
        bundle = read_bundle(file)
    except BundleError as exc:
        raise _fail(str(exc)) from None
    env = bundle.environment
    console.print(f"[bold]{file}[/bold]: format {bundle.format_version}, created {bundle.created_at}, "
                  f"checksum ok ({bundle.checksum[:16]}...)")
    console.print(f"written with triton {env.triton}, torch {env.torch}, CUDA {env.cuda}")
    table = Table("kernel", "version", "device", "smem", "entries", "measured", "transferred",
                  "speedup vs default", "binaries")
    groups: dict[tuple[str, str, str], list[Entry]] = {}
    for entry in bundle.entries:
        groups.setdefault((entry.kernel, entry.kernel_version, entry.device), []).append(entry)
    for (name, version, dkey), entries in sorted(groups.items()):
        ratios = [e.default_median_us / e.median_us for e in entries
                  if e.source == "measured" and e.default_median_us and e.median_us > 0]
        speed = f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "-"
        targets = sorted({f"{b.target}/triton {b.triton}" for e in entries for b in e.binaries})
        table.add_row(name, version, dkey, str(bundle.devices[dkey].smem_per_block), str(len(entries)),
                      str(sum(e.source == "measured" for e in entries)),
                      str(sum(e.source == "transferred" for e in entries)), speed, ", ".join(targets) or "-")
    console.print(table)


@bundle_app.command("merge")
def merge_command(
    files: list[str] = typer.Argument(..., help="Bundles to combine (earlier ones win ties)."),
    out: str = typer.Option(..., "--out", "-o", help="Bundle file to write."),
) -> None:
    """Combine bundles: one entry per (kernel version, device, problem), the faster measurement."""
    try:
        bundles = [read_bundle(f) for f in files]
    except BundleError as exc:
        raise _fail(f"refused: {exc}") from None
    merged = merge(bundles)
    write_bundle(merged, out)
    console.print(f"merged {len(files)} bundles into {out}: {len(merged.entries)} entries")


@bundle_app.command("transfer")
def transfer_command(
    from_device: str = typer.Option(..., "--from-device", help="Measured device: key or product name."),
    target: str = typer.Option(..., "--target", help="Target arch nobody measured, e.g. sm_120."),
    out: str = typer.Option(..., "--out", "-o", help="Bundle file to write."),
    kernel: Optional[list[str]] = typer.Option(None, "--kernel", "-k", help="Only these kernels (repeat)."),
    top: int = typer.Option(8, help="How many of the fastest measured configs to try per problem."),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
    binaries: bool = typer.Option(False, "--binaries", help="Attach the compiled kernels."),
) -> None:
    """Entries for an unmeasured target: the fastest measured configs that compile and fit it."""
    from aotune.cache_db.bundle_store import measured_rankings
    from aotune.tuner.arch import get_arch

    arch = get_arch(target)
    rankings = measured_rankings(_store(db), from_device, kernel or ())
    if not rankings:
        raise _fail(f"no ok trials on device {from_device!r} in the database")
    generic = DeviceModel(vendor="nvidia", arch=arch.name, product="generic", smem_per_block=arch.smem_per_block,
                          sm_count=0)
    dkey = DeviceClass(**generic.model_dump()).key
    entries = [e for e in (_transfer_one(r, arch.name, dkey, top, binaries) for r in rankings) if e is not None]
    bundle = new_bundle(entries, {dkey: generic})
    write_bundle(bundle, out)
    console.print(f"transferred {len(entries)} of {len(rankings)} problems from {from_device} to {arch.name}: {out}")


def _transfer_one(ranked: Any, target: str, dkey: str, top: int, binaries: bool) -> Entry | None:
    from aotune.kernels import get_kernel
    from aotune.tuner.feasibility import compile_candidate

    if get_kernel(ranked.kernel).version != ranked.kernel_version:
        console.print(f"[yellow]skip[/yellow] {ranked.kernel} {ranked.problem_key}: measured version "
                      f"{ranked.kernel_version} is not the installed kernel's")
        return None
    for config, median in ranked.configs[:top]:
        result = compile_candidate(ranked.kernel, ranked.problem, config, target, keep_artifacts=binaries,
                                   host_modules=binaries)
        if not result.fits:
            continue
        binary = binary_of(result, target) if binaries else None
        return Entry(kernel=ranked.kernel, kernel_version=ranked.kernel_version, device=dkey,
                     problem_key=ranked.problem_key, problem=ranked.problem, config=config, median_us=median,
                     shared_bytes=result.shared_bytes, source="transferred", transferred_from=ranked.device.key,
                     binaries=[binary] if binary else [])
    console.print(f"[yellow]none of the top {top}[/yellow] configs of {ranked.kernel} {ranked.problem_key} "
                  f"fit {target}")
    return None


def problem_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["M=4", "K=4096"]`` -> ``{"M": "4", "K": "4096"}`` (typed later by the kernel's Problem)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"--problem {pair!r}: expected k=v")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _device(name: Optional[str], known: dict[str, DeviceClass]) -> DeviceClass:
    from aotune.tuner.arch import ARCHES, get_arch

    if name is None:
        from aotune.kernels.device import device_class

        return device_class(None)
    if name.lower() in ("interp", "cpu", INTERPRETER.key):
        return INTERPRETER
    for key, device in known.items():
        if name == key or normalize_product(name) == device.product:
            return device
    try:
        arch = get_arch(name)
    except ValueError:
        raise typer.BadParameter(f"--device {name!r}: not a device in the sources ({sorted(known)}), "
                                 f"nor an arch ({sorted(ARCHES)}), nor 'interp'") from None
    return DeviceClass("nvidia", arch.name, "generic", arch.smem_per_block, 0)


def _compile_fits(kernel: str, problem: dict[str, Any], device: DeviceClass) -> runtime_loader.Fits | None:
    if device.arch == INTERPRETER_ARCH:
        return None
    from aotune.tuner.feasibility import compile_candidate

    def fits(config: Any) -> bool | None:
        result = compile_candidate(kernel, problem, dict(config), device.arch)
        if result.status == "ok":
            return result.shared_bytes <= device.smem_per_block
        return False if result.status == "out_of_resources" else None
    return fits


def query_command(
    kernel: str = typer.Option(..., "--kernel", "-k", help="Kernel name."),
    problem: list[str] = typer.Option(..., "--problem", "-p", help="Problem field k=v (repeat)."),
    device: Optional[str] = typer.Option(None, "--device", "-d",
                                         help="Device key or product, an arch (sm_120), or 'interp'; default: this machine's."),
    db: Optional[str] = typer.Option(None, help="Also read this database (any SQLAlchemy URL)."),
    bundle: Optional[list[str]] = typer.Option(None, "--bundle", "-b", help="Explicit bundle file (repeat)."),
) -> None:
    """Which config a serving process would use for this kernel, problem and device, and why."""
    from aotune.kernels import get_kernel
    from aotune.kernels.runtime import resolve

    spec = get_kernel(kernel)
    try:
        typed = spec.problem(problem_pairs(problem))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    sources: list[runtime_loader.Source] = list(bundle or [])
    if db and not db.startswith("sqlite:///"):
        from aotune.cache_db.bundle_store import export_from_store

        sources.append(to_dict(export_from_store(_store(db), [kernel])))
    source = runtime_loader.Loader(sources, db_url=db if db and db.startswith("sqlite:///") else None)
    target = _device(device, source.devices())
    answer = resolve(spec, typed, target, source=source, fits=_compile_fits(kernel, typed.to_dict(), target))
    table = Table("field", "value", show_header=False)
    for name, value in (("kernel", f"{kernel} (version {spec.version})"), ("device", target.key),
                        ("problem", typed.key), ("config", runtime_loader.canonical_json(dict(answer.config))),
                        ("source", answer.source), ("from", answer.origin or "-"),
                        ("obtained", answer.obtained or "-"), ("shared bytes", str(answer.shared_bytes or "-")),
                        ("median us", f"{answer.median_us:.2f}" if answer.median_us else "-")):
        table.add_row(name, value)
    console.print(table)
