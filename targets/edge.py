"""The edge target: one offline-installable tar.gz for an arm64 / armv7 / x86_64 board.

What goes in (under one top folder, `NAME-edge-ARCH/`):

    bento/            the WHOLE Bento folder (model, manifest, signature, anything later stages add)
    app/bento_compile the runtime and adapters (`runtime_package_files()`), nothing else of ours
    wheels/           the runtime's wheels for the device's architecture and Python, resolved
                      with the full manylinux tag list (no compiler, no network on the device)
    requirements.txt  the exact wheels to install (name==version)
    install.sh        verifies every sha256 FIRST, then venv + `pip --no-index`, atomic switch
    run               the on-device entry (serve | predict | lines | check | rollback | info)
    bento-NAME.service  systemd unit: Restart=on-failure, MemoryMax, CPUQuota, sandboxing
    config.env        HOST, PORT, load mode (kept across updates)
    bundle.env        facts install.sh needs (shell syntax); bundle.json: the same and more
    SHA256SUMS        sha256 of every other file (sha256sum -c format)

The runtime follows the model format: ONNX Runtime for `.onnx` / `.ort`; for `.tflite`,
`ai-edge-litert` (Python 3.11+, numpy 2) or `tflite-runtime` (Python <= 3.11, numpy < 2,
2.4 MB: the smallest footprint, and the one that has armv7 wheels). PyPI has no armv7
numpy wheels, so an armv7 bundle uses the device's own numpy (python3-numpy) through a
venv with system site-packages, and install.sh checks it is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bento_compile import __version__
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.sbom import sbom_json
from bento_compile.runtimes.boundary import UnsafeName, check_prefix
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import read_manifest, verify_files
from bento_compile.runtimes.model_format import MODEL_FORMATS, ONNX_RUNTIME_FORMATS, model_format_of
from bento_compile.runtimes.threads import worker_count_for
from bento_compile.targets import render
from bento_compile.targets.bundle_tar import Entry, write_tar_gz
from bento_compile.targets.pipeline_wheels import pipeline_requirements
from bento_compile.targets.render import shell_assign
from bento_compile.targets.runtime_files import runtime_package_files
from bento_compile.targets.wheels import TargetPlatform, Wheel, resolve_wheels, wheels_in

TFLITE_RUNTIMES = ("auto", "ai-edge-litert", "tflite-runtime")
# prometheus-client: pure Python, 60 kB; without it /metrics answers that it is missing.
HTTP_REQUIREMENTS = ["fastapi>=0.110", "uvicorn>=0.29", "orjson>=3.9", "prometheus-client>=0.20"]
_MIB = 1024 * 1024


@dataclass(frozen=True)
class EdgeOptions:
    """What the user chose on the command line (see `bento-compile target edge --help`)."""

    arch: str = "arm64"
    python: str = "3.11"
    format: str | None = None  # None: the Bento's own format
    glibc: tuple[int, int] = (2, 34)
    http: bool = True
    tflite_runtime: str = "auto"
    prefix: str | None = None
    host: str = "127.0.0.1"
    port: int = 3000
    memory_max: str | None = None  # None: from the measured footprint
    cpu_quota: str = "100%"
    measure: bool = True  # measure peak RSS here (printed only; never in the bundle)
    sign_key: str | None = None  # private key file: sign SHA256SUMS (flash and install.sh check it against a key)


@dataclass(frozen=True)
class RuntimePlan:
    """Which inference engine, which wheels, and what the device itself must provide."""

    engine: str
    requirements: list[str]
    no_deps: list[str] = field(default_factory=list)  # resolved without their dependencies
    system_modules: list[str] = field(default_factory=list)  # imported from the device's Python


@dataclass(frozen=True)
class EdgeBundle:
    """The result of a build, and the figures the CLI prints."""

    path: Path
    sha256: str
    size: int
    installed_size: int
    memory_bytes: int
    measured_memory: int | None
    memory_max: str
    release_id: str
    plan: RuntimePlan
    signed: bool
    wheels: list[Wheel]
    target: TargetPlatform
    model_format: str
    tag: str

    def to_json(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "size": self.size, "tag": self.tag,
                "installed_size": self.installed_size, "memory_bytes": self.memory_bytes,
                "measured_memory": self.measured_memory, "memory_max": self.memory_max, "release_id": self.release_id,
                "signed": self.signed,
                "arch": self.target.arch, "machine": self.target.machine, "python": self.target.python,
                "format": self.model_format, "runtime": asdict(self.plan),
                "wheels": [{"name": w.name, "version": w.version, "file": w.filename, "sha256": w.sha256}
                           for w in self.wheels]}


def plan_runtime(model_format: str, target: TargetPlatform, http: bool = True,
                 tflite_runtime: str = "auto") -> RuntimePlan:
    """The engine and wheels for a model format on a platform, or a clear error why there are none."""
    server = HTTP_REQUIREMENTS if http else []
    if model_format in ONNX_RUNTIME_FORMATS:
        if target.machine == "armv7l":
            raise BentoCompileError(
                "ONNX Runtime publishes no armv7 wheels, so an armv7 bundle cannot run a "
                f".{model_format} model.",
                "Compile the model to TFLite (a Bento with model format tflite) and build with --format tflite, "
                "or target a 64-bit OS on the board (--arch arm64).")
        return RuntimePlan("onnxruntime", ["onnxruntime>=1.20", "numpy>=1.26", *server])
    if model_format != "tflite":
        raise BentoCompileError(f"Unknown model format '{model_format}'.", f"Use one of: {', '.join(MODEL_FORMATS)}.")
    if tflite_runtime not in TFLITE_RUNTIMES:
        raise BentoCompileError(f"Unknown TFLite runtime '{tflite_runtime}'.",
                                f"Use one of: {', '.join(TFLITE_RUNTIMES)}.")
    choice = tflite_runtime
    if choice == "auto":
        choice = "tflite-runtime" if target.machine == "armv7l" or target.python == "3.10" else "ai-edge-litert"
    if choice == "tflite-runtime":
        if target.python not in ("3.10", "3.11"):
            raise BentoCompileError(
                f"tflite-runtime's last release (2.14) has no wheels for Python {target.python}.",
                "Build with --python 3.11 (or 3.10) for the device, or --tflite-runtime ai-edge-litert.")
        if target.machine == "armv7l":
            # PyPI has no armv7 numpy wheel: the device's python3-numpy (Debian: 1.24, < 2) serves it.
            return RuntimePlan("tflite-runtime", ["tflite-runtime==2.14.0", *server], no_deps=["tflite-runtime"],
                               system_modules=["numpy"])
        return RuntimePlan("tflite-runtime", ["tflite-runtime==2.14.0", "numpy<2", *server])
    if target.machine == "armv7l":
        raise BentoCompileError("ai-edge-litert has no armv7 wheels.", "Use --tflite-runtime tflite-runtime for armv7.")
    if target.python == "3.10":
        raise BentoCompileError("ai-edge-litert needs Python 3.11 or newer on the device.",
                                "Build with --python 3.11+, or --tflite-runtime tflite-runtime.")
    return RuntimePlan("ai-edge-litert", ["ai-edge-litert", "numpy>=2", *server])


def resolve_plan_wheels(plan: RuntimePlan, target: TargetPlatform, dest: Path) -> list[Wheel]:
    """Download the plan's wheels for the target (and those taken without dependencies)."""
    regular = [r for r in plan.requirements if _req_name(r) not in plan.no_deps]
    if regular:
        resolve_wheels(regular, target, dest)
    no_deps = [r for r in plan.requirements if _req_name(r) in plan.no_deps]
    if no_deps:
        resolve_wheels(no_deps, target, dest, dependencies=False,
                       fix="Pick another --python/--arch, or another --tflite-runtime.")
    return wheels_in(dest)


def _req_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


# Resident memory of an idle process with the engine imported (measured on x86_64 and aarch64,
# Python 3.11), before the model: the deterministic part of the estimate.
_ENGINE_BASE = {"onnxruntime": 45 * _MIB, "ai-edge-litert": 40 * _MIB, "tflite-runtime": 25 * _MIB}
_HTTP_BASE = 35 * _MIB


def estimate_memory(plan: RuntimePlan, model_bytes: int, http: bool) -> int:
    """A deterministic estimate (it goes into the bundle, which must build to the same bytes):
    interpreter + engine + HTTP stack + twice the model (the file mapped, plus the session's copy)."""
    return 12 * _MIB + _ENGINE_BASE[plan.engine] + (_HTTP_BASE if http else 0) + 2 * model_bytes


def measure_memory(bento_dir: Path, http: bool) -> int | None:
    """Peak RSS of load + one prediction in a fresh process on THIS machine, when it can run the
    format; printed beside the estimate, never written into the bundle (it varies run to run)."""
    script = (
        "import re\n"
        "from bento_compile.runtimes.model import BentoModel\n"
        f"m = BentoModel.load({str(bento_dir)!r})\n"
        "ex = m.manifest.example\n"
        "if ex: m.predict(ex)\n"
        + ("import uvicorn\nfrom bento_compile.adapters.http_app import create_app\n" if http else "")
        # VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the (large) build process.
        + "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024)\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        if result.returncode == 0:
            return int(result.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        pass
    return None


def memory_max_for(estimate: int) -> str:
    """Twice the estimate, rounded up to 64 MiB, at least 256 MiB: room for batches, never the whole board."""
    limit = max(256 * _MIB, -(-2 * estimate // (64 * _MIB)) * 64 * _MIB)
    return f"{limit // _MIB}M"


def _wheel_installed_size(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        return sum(info.file_size for info in zf.infolist())


def _template(name: str) -> str:
    return resources.files("bento_compile.targets").joinpath("edge_files", name).read_text(encoding="utf-8")


def service_name(name: str) -> str:
    return "bento-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", name)


def bundle_file_name(name: str, arch: str) -> str:
    return f"{name}-edge-{arch}"


def build_edge_bundle(bento_dir: Path, options: EdgeOptions, out_dir: Path,
                      progress: Callable[[str], None] = lambda _m: None) -> EdgeBundle:
    """Build `OUT/NAME-edge-ARCH.tar.gz` (and its `.sha256`) from a Bento folder."""
    bento_dir = Path(bento_dir)
    manifest = read_manifest(bento_dir)
    try:
        verify_files(bento_dir, manifest)  # never ship a damaged Bento: the device would refuse it anyway
    except IntegrityError as exc:
        raise BentoCompileError(f"The Bento {manifest.tag} is damaged: {exc}",
                                "Rebuild it (bento-compile build) or pull it again.") from exc
    bento_format = model_format_of(manifest)
    model_format = options.format or bento_format
    if model_format not in MODEL_FORMATS:
        raise BentoCompileError(f"Unknown --format '{model_format}'.", f"Use one of: {', '.join(MODEL_FORMATS)}.")
    if model_format != bento_format:
        raise BentoCompileError(
            f"{manifest.tag} holds a .{bento_format} model, not .{model_format}.",
            f"Compile a Bento in that format (bento.yaml `format: {model_format}`, see the compiler docs) and "
            f"build the bundle from it, or leave out --format to ship the .{bento_format} model.")
    target = TargetPlatform(arch=options.arch, python=options.python, glibc=options.glibc)
    plan = plan_runtime(model_format, target, options.http, options.tflite_runtime)
    if (bento_dir / "signature.json").is_file():
        # Only to verify signature.json when the device configures a public key (runtimes/trust.py).
        plan = RuntimePlan(plan.engine, [*plan.requirements, "cryptography>=42"], plan.no_deps, plan.system_modules)
    if pipeline_requirements(manifest):  # Pillow / tokenizers, only for Bentos that take images / text
        plan = RuntimePlan(plan.engine, [*plan.requirements, *pipeline_requirements(manifest)], plan.no_deps,
                           plan.system_modules)
    name = manifest.name
    service = service_name(name)
    prefix = options.prefix or f"/opt/{name}"
    try:  # it lands in bundle.env, bundle.json and (through install.sh) the unit's Exec lines
        check_prefix(prefix, "--prefix")
    except UnsafeName as exc:
        raise BentoCompileError(f"{exc}.", f"e.g. --prefix /opt/{name}") from None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-wheels-") as scratch:
        progress(f"Resolving {plan.engine} wheels for {target.machine} / Python {target.python}")
        wheels = resolve_plan_wheels(plan, target, Path(scratch))

        entries: list[Entry] = []
        for path in sorted(p for p in bento_dir.rglob("*") if p.is_file() or p.is_symlink()):
            if path.is_symlink():
                raise BentoCompileError(f"{path} is a symbolic link; a Bento holds plain files only.",
                                        "Rebuild the Bento.")
            entries.append(Entry(f"bento/{path.relative_to(bento_dir).as_posix()}", source=path))
        entries += [Entry(f"app/{arc}", source=src) for arc, src in runtime_package_files()]
        entries += [Entry(f"wheels/{w.filename}", source=w.path) for w in wheels]
        model_bytes = sum(meta.size for meta in manifest.files.values())

        memory = estimate_memory(plan, model_bytes, options.http)
        # Every HTTP worker holds its own session: the limit grows with their number.
        memory_max = options.memory_max or memory_max_for(memory * (workers_for_quota(options.cpu_quota)
                                                                    if options.http else 1))
        measured = None
        if model_format in ONNX_RUNTIME_FORMATS and options.measure:
            progress("Measuring the memory footprint on this machine")
            measured = measure_memory(bento_dir, options.http)

        entries += [
            Entry("install.sh", data=_template("install.sh").encode(), executable=True),
            Entry("run", data=_template("run").encode(), executable=True),
            Entry(f"{service}.service", data=render_unit(manifest.tag, service, memory_max, options.cpu_quota)),
            Entry("config.env", data=render_config_env(manifest.tag, options.host, options.port)),
            Entry("requirements.txt", data="".join(f"{w.name}=={w.version}\n" for w in wheels).encode()),
        ]
        entries.append(Entry("sbom.cdx.json", data=sbom_json(  # CycloneDX SBOM: what the device runs, for audits
            artifact=f"{bundle_file_name(name, options.arch)}.tar.gz", target="edge", bento_dir=bento_dir,
            wheels=wheels, runtime_files=runtime_package_files()).encode()))
        # The release id names the folder on the device: version + a digest of the payload.
        payload = hashlib.sha256()
        sums: dict[str, tuple[str, int]] = {}
        for entry in sorted(entries, key=lambda e: e.name):
            sums[entry.name] = entry.sha256_and_size()
            payload.update(f"{entry.name}\0{sums[entry.name][0]}\n".encode())
        release_id = f"{manifest.version}-{target.machine}-{payload.hexdigest()[:10]}"
        installed = sum(size for n, (_s, size) in sums.items() if not n.startswith("wheels/"))
        installed += sum(_wheel_installed_size(w.path) for w in wheels) + 12 * _MIB  # + the venv's own pip

        bundle_env = "".join(shell_assign(key, value) for key, value in (
            ("NAME", name), ("TAG", manifest.tag), ("SERVICE_NAME", service), ("PREFIX_DEFAULT", prefix),
            ("PY_VERSION", target.python), ("MACHINE", target.machine), ("RELEASE_ID", release_id),
            ("SYSTEM_MODULES", " ".join(plan.system_modules)), ("ENGINE", plan.engine)))
        entries.append(Entry("bundle.env", data=bundle_env.encode()))
        info = {
            "kind": "bento-compile-edge-bundle", "schema": 1, "bento_compile": __version__,
            "tag": manifest.tag, "name": name, "version": manifest.version, "release_id": release_id,
            "target": {"arch": target.arch, "machine": target.machine, "python": target.python,
                       "glibc": f"{target.glibc[0]}.{target.glibc[1]}", "platform_tags": target.platform_tags()},
            "format": model_format, "runtime": asdict(plan), "http": options.http,
            "service": service, "prefix": prefix, "limits": {"MemoryMax": memory_max, "CPUQuota": options.cpu_quota},
            "estimates": {"installed_bytes": installed, "memory_bytes": memory},
            "wheels": [{"name": w.name, "version": w.version, "file": w.filename, "sha256": w.sha256}
                       for w in wheels],
            "files": {n: {"sha256": s, "size": size} for n, (s, size) in sorted(sums.items())},
        }
        bundle_json = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
        entries.append(Entry("bundle.json", data=bundle_json))
        sums["bundle.env"] = Entry("", data=bundle_env.encode()).sha256_and_size()
        sums["bundle.json"] = Entry("", data=bundle_json).sha256_and_size()
        sums_bytes = "".join(f"{s}  {n}\n" for n, (s, _z) in sorted(sums.items())).encode()
        entries.append(Entry("SHA256SUMS", data=sums_bytes))
        signing_key = _signing_key(options, bento_dir)
        if signing_key is not None:
            # Detached, raw Ed25519 over SHA256SUMS (which lists every other file): what flash and
            # `openssl pkeyutl -verify -rawin` on the device check against a key the user holds.
            entries.append(Entry("SHA256SUMS.sig", data=signing_key.sign(sums_bytes)))

        top = bundle_file_name(name, options.arch)
        path = out_dir / f"{top}.tar.gz"
        progress(f"Writing {path.name}")
        digest = write_tar_gz(path, top, entries)
    sidecar = out_dir / f"{top}.tar.gz.sha256"
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    tmp.replace(sidecar)
    return EdgeBundle(path=path, sha256=digest, size=path.stat().st_size, installed_size=installed,
                      memory_bytes=memory, measured_memory=measured, memory_max=memory_max, release_id=release_id,
                      plan=plan, signed=signing_key is not None, wheels=wheels, target=target,
                      model_format=model_format, tag=manifest.tag)


def _signing_key(options: EdgeOptions, bento_dir: Path) -> Any:
    """--sign-key, else $BENTO_COMPILE_SIGNING_KEY when the Bento itself is signed (its maker signs releases),
    else None: an unsigned bundle, which flash refuses wherever a public key is configured."""
    from bento_compile.core.signing import PRIVATE_KEY_ENV, load_private_key

    if options.sign_key:
        return load_private_key(options.sign_key)
    if (bento_dir / "signature.json").is_file() and os.environ.get(PRIVATE_KEY_ENV, "").strip():
        return load_private_key(None)
    return None


def render_unit(tag: str, service: str, memory_max: str, cpu_quota: str) -> bytes:
    """The systemd unit, each value by systemd's rules (one line, `%` doubled); @PREFIX@ is install.sh's."""
    return render.fill(_template("unit.service"), {
        "TAG": render.systemd_text(tag, "the Bento tag"), "SERVICE": render.systemd_text(service, "the service"),
        "MEMORY_MAX": render.memory_max(memory_max), "CPU_QUOTA": render.cpu_quota(cpu_quota),
        "WORKERS": str(workers_for_quota(cpu_quota))}).encode()


def workers_for_quota(cpu_quota: str) -> int:
    """HTTP workers for a systemd CPUQuota ("250%" is two and a half CPUs: two workers)."""
    return worker_count_for(int(render.cpu_quota(cpu_quota)[:-1]) / 100)


def render_config_env(tag: str, host: str, port: int) -> bytes:
    """config.env: read by systemd (EnvironmentFile) and by `run`, so values are plain words both read alike."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise BentoCompileError(f"--port {port!r} is not a TCP port.", "Use a number from 1 to 65535.")
    return render.fill(_template("config.env"), {
        "TAG": render.one_line(tag, "the Bento tag"), "HOST": render.env_file_value(host, "--host"),
        "PORT": str(port)}).encode()
