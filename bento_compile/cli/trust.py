"""CLI for trust and distribution: keygen, sign, verify, push, pull, tag (registered in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bento_compile.cli.console import err, human_size
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.errors import IntegrityError

ENDPOINT_HELP = "S3-compatible endpoint (MinIO, R2, moto…); default: $AWS_ENDPOINT_URL or AWS."


@click.command()
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the key pair (created if missing).")
@click.option("--name", default="bento-signing", show_default=True, help="File name stem of the keys.")
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keygen(out_dir: Path, name: str, force: bool) -> None:
    """Make an Ed25519 key pair: NAME.key (private, 0600) and NAME.pub.pem (public).

    \b
    Keep the .key secret (a CI secret: $BENTO_COMPILE_SIGNING_KEY); ship or
    configure only the .pub.pem ($BENTO_COMPILE_PUBLIC_KEY at serving time).
    Example:
      bento-compile keygen -o keys/
    """
    from bento_compile.core.signing import generate_keypair

    pair = generate_keypair(out_dir, name, overwrite=force)
    err.print(f"private key: {pair.private_path} (keep it secret)\npublic key:  {pair.public_path}\n"
                 f"fingerprint: {pair.fingerprint}")
    click.echo(str(pair.public_path))


@click.command()
@click.argument("tag")
@click.option("--key", "key_file", type=click.Path(path_type=Path),
              help="Private key file (default: $BENTO_COMPILE_SIGNING_KEY, PEM text or a path).")
@click.option("--json", "as_json", is_flag=True, help="Print tag, signature path and key fingerprint as JSON.")
def sign(tag: str, key_file: Path | None, as_json: bool) -> None:
    """Sign a stored Bento: writes signature.json beside its manifest (the version does not change).

    \b
    Example:
      bento-compile sign churn:latest --key keys/bento-signing.key
      BENTO_COMPILE_SIGNING_KEY="$SECRET" bento-compile sign churn:latest
    """
    from bento_compile.core.signing import load_private_key, sign_bento

    bento = BentoStore().resolve(tag)
    record = sign_bento(bento.path, load_private_key(key_file))
    if as_json:
        click.echo(json.dumps({"tag": bento.tag, "signature": str(bento.path / "signature.json"),
                               "key_fingerprint": record["public_key_fingerprint"]}, sort_keys=True))
        return
    err.print(f"[green]Signed[/] {bento.tag} with {record['public_key_fingerprint']}")
    click.echo(str(bento.path / "signature.json"))


@click.command()
@click.argument("target")
@click.option("--pub", "pub", help="Public key file (or the key text); default: $BENTO_COMPILE_PUBLIC_KEY.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def verify(target: str, pub: str | None, as_json: bool) -> None:
    """Check a Bento's signature and every file's sha256, as the runtime does before loading.

    TARGET is a stored TAG, a Bento folder, or an artifact that holds one: a
    Lambda zip, an edge bundle (.tar.gz) or an OCI image layout folder.
    Exit code 0 when everything verifies, 1 naming the file that does not.
    \b
    Example:
      bento-compile verify churn:latest --pub keys/bento-signing.pub.pem
      bento-compile verify dist/lambda/function.zip --pub keys/bento-signing.pub.pem
    """
    from bento_compile.core.signing import resolve_public_key, verify_bento
    from bento_compile.tools.artifact_bento import extracted_bento

    key = resolve_public_key(pub)
    path = Path(target)
    source = path if path.exists() else BentoStore().resolve(target).path
    with extracted_bento(source) as bento_dir:
        try:
            report = verify_bento(bento_dir, key)
        except IntegrityError as exc:
            raise BentoCompileError(f"{target} does not verify: {exc}",
                                    "Do not deploy it. Rebuild and re-sign it, or re-pull it from the store.") from None
    if as_json:
        click.echo(json.dumps({"ok": True, "target": target, **report}, sort_keys=True))
        return
    err.print(f"[green]Verified[/] {report['tag']}: signed by {report['key']}, "
                 f"{len(report['files'])} file(s) match the manifest")
    click.echo("OK")


@click.command()
@click.argument("tag")
@click.argument("url")
@click.option("--endpoint-url", help=ENDPOINT_HELP)
@click.option("--part-size", type=click.IntRange(5, 5120), default=64, show_default=True,
              help="Multipart part size in MiB; files at least this large go up in resumable parts.")
def push(tag: str, url: str, endpoint_url: str | None, part_size: int) -> None:
    """Upload a stored Bento to S3: files first, manifest last; large files in resumable multipart.

    \b
    URL is s3://bucket/prefix. Re-running after an interruption resumes: parts
    already uploaded are checked (MD5 ETag) and kept.
    Example:
      bento-compile push churn:latest s3://models/bentos
      bento-compile push churn:latest s3://models/bentos --endpoint-url http://127.0.0.1:9000
    """
    from bento_compile.tools.remote import MiB, RemoteStore

    bento = BentoStore().resolve(tag)
    remote = RemoteStore.from_url(url, endpoint_url, part_size=part_size * MiB, multipart_threshold=part_size * MiB)
    with err.status(f"Pushing {bento.tag}…") as status:
        result = remote.push(bento.path, progress=lambda msg: status.update(msg))
    err.print(f"[green]Pushed[/] {bento.tag} to {remote.url_for(bento.manifest.name, bento.manifest.version)} "
                 f"({result.uploaded_bytes} bytes uploaded, {result.skipped} file(s) already there)")
    click.echo(remote.url_for(bento.manifest.name, bento.manifest.version))


@click.command()
@click.argument("url")
@click.option("--endpoint-url", help=ENDPOINT_HELP)
@click.option("--pub", help="Also require a valid signature by this public key before storing.")
def pull(url: str, endpoint_url: str | None, pub: str | None) -> None:
    """Download a Bento from S3 into the local store, verifying every sha256 first.

    URL is s3://bucket/prefix/NAME:VERSION (or NAME:STAGE, e.g. churn:prod, or
    NAME:latest). Nothing reaches the local store until the whole Bento verified.
    \b
    Example:
      bento-compile pull s3://models/bentos/churn:prod --pub keys/bento-signing.pub.pem
    """
    from bento_compile.core.signing import resolve_public_key
    from bento_compile.tools.remote import RemoteStore, split_ref

    base, name, ref = split_ref(url)
    key = resolve_public_key(pub) if pub else None
    remote = RemoteStore.from_url(base, endpoint_url)
    with err.status(f"Pulling {name}:{ref}…") as status:
        stored = remote.pull(name, ref, BentoStore(), public_key=key, progress=lambda msg: status.update(msg))
    err.print(f"[green]Pulled[/] {stored.tag} into {stored.path}")
    click.echo(stored.tag)


@click.command("tag")
@click.argument("tag")
@click.argument("stage")
@click.option("--remote", "remote_url", envvar="BENTO_COMPILE_REMOTE", required=True,
              help="s3://bucket/prefix holding the Bento (or $BENTO_COMPILE_REMOTE).")
@click.option("--endpoint-url", help=ENDPOINT_HELP)
def tag_command(tag: str, stage: str, remote_url: str, endpoint_url: str | None) -> None:
    """Point NAME:STAGE (e.g. churn:prod) at a pushed version, in one atomic write.

    \b
    TAG is NAME:VERSION (a pushed version, or a stage/`latest` to copy it).
    Example:
      bento-compile tag churn:3f2a9c01d4e5b6a7 prod --remote s3://models/bentos
      bento-compile pull s3://models/bentos/churn:prod
    """
    from bento_compile.tools.remote import RemoteStore, parse_remote_tag

    name, ref = parse_remote_tag(tag)
    remote = RemoteStore.from_url(remote_url, endpoint_url)
    pointer = remote.set_stage(name, ref, stage)
    err.print(f"[green]{name}:{stage}[/] → {name}:{pointer['version']}")
    click.echo(f"{name}:{pointer['version']}")


def signature_summary(bento_dir: Path) -> str:
    """One line for `show`: who signed it (unverified here) or how to sign it."""
    path = Path(bento_dir) / "signature.json"
    if not path.is_file():
        return "signed: no (bento-compile sign TAG --key KEYFILE)"
    try:
        fingerprint = json.loads(path.read_text())["public_key_fingerprint"]
    except (ValueError, KeyError, TypeError):
        return "signed: signature.json is damaged (re-sign the Bento)"
    return f"signed: by {fingerprint} (check it: bento-compile verify TAG --pub KEY.pub.pem)"


def list_remote(url: str, endpoint_url: str | None, as_json: bool) -> None:
    """`bento-compile list --remote s3://…`: the pushed Bentos and the stages pointing at them."""
    from rich.console import Console
    from rich.table import Table

    from bento_compile.tools.remote import RemoteStore

    remote = RemoteStore.from_url(url, endpoint_url)
    entries = remote.list()
    if as_json:
        click.echo(json.dumps(entries, sort_keys=True))
        return
    if not entries:
        err.print(f"No Bentos under {url}. Push one: bento-compile push NAME:latest {url}")
        return
    table = Table("tag", "created", "size", "signed", "stages", box=None)
    for entry in entries:
        table.add_row(entry["tag"], entry["created"], human_size(entry["size"]), "yes" if entry["signed"] else "no",
                      ", ".join(entry["stages"]))
    Console().print(table)


COMMANDS = (keygen, sign, verify, push, pull, tag_command)
