"""CLI: `bento-compile target edge` and `bento-compile flash` (registered in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from bento_compile.cli.console import err, human_size
from bento_compile.core.errors import BentoCompileError


def _resolve_bento(tag: str) -> Path:
    """A store tag (NAME:latest, NAME:VERSION), or the path of a Bento folder."""
    path = Path(tag)
    if path.is_dir() and (path / "manifest.json").is_file():
        return path
    from bento_compile.core.store import BentoStore

    return BentoStore().resolve(tag).path


def _glibc(value: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in value.split("."))
    except ValueError:
        raise BentoCompileError(f"--glibc '{value}' is not MAJOR.MINOR.", "e.g. --glibc 2.31 (ldd --version)") from None
    return major, minor


@click.command("edge")
@click.argument("tag")
@click.option("--arch", type=click.Choice(["arm64", "armv7", "x86_64"]), default="arm64", show_default=True,
              help="The device's CPU (uname -m: aarch64 = arm64, armv7l = armv7).")
@click.option("--python", "python_version", default="3.11", show_default=True,
              help="The device's Python (python3 --version): its wheels are chosen for it.")
@click.option("--format", "model_format", type=click.Choice(["onnx", "ort", "tflite"]),
              help="Model format to ship (default: the Bento's own). onnx/ort run on ONNX Runtime, tflite on LiteRT.")
@click.option("--glibc", default="2.34", show_default=True,
              help="The device's glibc (ldd --version); wheels needing a newer one are not chosen.")
@click.option("--tflite-runtime", type=click.Choice(["auto", "ai-edge-litert", "tflite-runtime"]), default="auto",
              show_default=True, help="For tflite: tflite-runtime is smallest and the only one for armv7.")
@click.option("--no-http", is_flag=True, help="Leave out the HTTP server (FastAPI/uvicorn): predict and lines only.")
@click.option("--prefix", help="Install folder on the device (default /opt/NAME).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="HOST in the device's config.env (0.0.0.0 to serve the network).")
@click.option("--port", default=3000, show_default=True, type=int, help="PORT in the device's config.env.")
@click.option("--memory-max", help="systemd MemoryMax (default: twice the estimated footprint, at least 256M).")
@click.option("--cpu-quota", default="100%", show_default=True, help="systemd CPUQuota (100% = one core).")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("dist"), show_default=True,
              help="Folder for NAME-edge-ARCH.tar.gz and its .sha256.")
@click.option("--sign-key", type=click.Path(path_type=Path),
              help="Private key (bento-compile keygen) to sign the bundle with; default $BENTO_COMPILE_SIGNING_KEY "
                   "when the Bento is signed. flash --pub and the device's trusted-key.pub.pem check it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (path, sha256, sizes, wheels).")
def edge(tag: str, arch: str, python_version: str, model_format: str | None, glibc: str, tflite_runtime: str,
         no_http: bool, prefix: str | None, host: str, port: int, memory_max: str | None, cpu_quota: str,
         sign_key: Path | None, out_dir: Path, as_json: bool) -> None:
    """Build an offline-installable bundle of TAG for an edge device (Raspberry Pi, Jetson, any Linux board).

    \b
    One tar.gz: the Bento, the runtime, the device's wheels, install.sh (verifies
    every sha256, installs offline into a versioned folder, switches `current`
    atomically), a systemd unit and a `run` entry (serve | predict | lines | rollback).
    The same inputs build the same bytes. The last line of stdout is the bundle's path.
    \b
    Example:
      bento-compile target edge churn:latest --arch arm64 --python 3.11 -o dist/
      bento-compile target edge churn:latest --sign-key keys/bento-signing.key -o dist/
      bento-compile flash dist/churn-edge-arm64.tar.gz --to ssh://pi@raspberrypi.local:/opt/churn
    """
    from bento_compile.targets.edge import EdgeOptions, build_edge_bundle

    options = EdgeOptions(arch=arch, python=python_version, format=model_format, glibc=_glibc(glibc),
                          http=not no_http, tflite_runtime=tflite_runtime, prefix=prefix, host=host, port=port,
                          memory_max=memory_max, cpu_quota=cpu_quota, sign_key=str(sign_key) if sign_key else None)
    bento_dir = _resolve_bento(tag)
    with err.status("Building the edge bundle…") as status:
        def progress(message: str) -> None:
            status.update(message + "…")
            err.print(f"[dim]•[/] {message}")

        bundle = build_edge_bundle(bento_dir, options, out_dir, progress)
    if as_json:
        click.echo(json.dumps(bundle.to_json(), sort_keys=True))
        return
    table = Table(box=None, show_header=False, title=f"edge bundle for {bundle.tag}")
    table.add_row("file", str(bundle.path))
    table.add_row("sha256", bundle.sha256)
    table.add_row("device", f"{bundle.target.machine}, Python {bundle.target.python}, glibc ≥ "
                            f"{bundle.target.glibc[0]}.{bundle.target.glibc[1]}")
    engine = next((w for w in bundle.wheels if w.name == bundle.plan.engine), None)
    model = f".{bundle.model_format} on {bundle.plan.engine}{' ' + engine.version if engine else ''}"
    if bundle.plan.system_modules:
        model += f" (+ the device's own {', '.join(bundle.plan.system_modules)})"
    table.add_row("model", model)
    table.add_row("wheels", f"{len(bundle.wheels)}: " + ", ".join(f"{w.name} {w.version}" for w in bundle.wheels))
    table.add_row("size", f"{human_size(bundle.size)} bundle, ≈ {human_size(bundle.installed_size)} installed")
    memory = f"≈ {human_size(bundle.memory_bytes)} estimated"
    if bundle.measured_memory:
        memory += f"; {human_size(bundle.measured_memory)} peak measured here (load + one prediction)"
    table.add_row("memory", memory)
    table.add_row("limits", f"MemoryMax={bundle.memory_max}, CPUQuota={options.cpu_quota}")
    table.add_row("signed", "yes (SHA256SUMS.sig)" if bundle.signed else "no (flash refuses it where a public key is "
                  "configured; sign with --sign-key)")
    err.print(table)
    err.print(f"[green]Wrote[/] {bundle.path}  (flash it: bento-compile flash {bundle.path} --to ssh://user@host:"
              f"{options.prefix or '/opt/' + bundle.tag.split(':')[0]})")
    click.echo(str(bundle.path))


@click.command("flash")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--to", "destination", required=True,
              help="ssh://user@host[:port]:/path on a running device, or the folder of a mounted root file system.")
@click.option("--prefix", help="For a root file system: install folder inside it (default: the bundle's, /opt/NAME).")
@click.option("-i", "--identity", type=click.Path(path_type=Path), help="ssh private key to log in with.")
@click.option("--ssh-option", "ssh_options", multiple=True,
              help="Extra ssh -o option, repeatable (e.g. StrictHostKeyChecking=accept-new).")
@click.option("--sudo", is_flag=True, help="Run install.sh with sudo -n on the device (for /opt as a normal user).")
@click.option("--no-service", is_flag=True, help="Do not install or start the systemd unit.")
@click.option("--python", "python_path", help="Over ssh: the device's Python to make the venv with (default python3).")
@click.option("--pub", "public_key", help="Public key (*.pub.pem) the bundle must be signed by; default "
                                          "$BENTO_COMPILE_PUBLIC_KEY, else the device's PREFIX/trusted-key.pub.pem.")
def flash_command(bundle: Path, destination: str, prefix: str | None, identity: Path | None,
                  ssh_options: tuple[str, ...], sudo: bool, no_service: bool, python_path: str | None,
                  public_key: str | None) -> None:
    """Install an edge BUNDLE on a device over ssh, or into a mounted root file system.

    \b
    Over ssh the bundle streams to the device, its sha256 is checked, and its own
    install.sh installs it offline and (re)starts the systemd unit. Into a root file
    system (an SD card, an image) it is copied and the unit is enabled; the device
    makes its venv on first boot. A failure leaves the previous release running.
    \b
    Example:
      bento-compile flash dist/churn-edge-arm64.tar.gz --to ssh://pi@raspberrypi.local:/opt/churn
      bento-compile flash dist/churn-edge-arm64.tar.gz --to /media/sdcard/rootfs
      bento-compile flash dist/churn-edge-arm64.tar.gz --to /media/sdcard/rootfs --pub keys/bento-signing.pub.pem
    \b
    Trust: the bundle is read and checked here first (only regular files and folders, every file
    in SHA256SUMS). With a public key (--pub, $BENTO_COMPILE_PUBLIC_KEY, or trusted-key.pub.pem in
    the device's prefix) an unsigned or wrongly signed bundle is refused; without one, only the
    bundle's own checksums are checked, and the command says so. Into a root file system nothing
    from the bundle runs on this machine.
    """
    from bento_compile.tools.flash import flash

    with err.status("Flashing…") as status:
        def progress(message: str) -> None:
            status.update(message + "…")
            err.print(f"[dim]•[/] {message}")

        result = flash(bundle, destination, prefix=prefix, service=not no_service, identity=identity,
                       ssh_options=ssh_options, sudo=sudo, python=python_path, public_key=public_key,
                       progress=progress)
    for line in result.log.strip().splitlines():
        err.print(f"[dim]{line}[/]")
    err.print(f"[green]Installed[/] on {result.destination}: {result.release}")
    click.echo(result.release)
