"""`edge keys generate`, `edge sign`, `edge verify`."""

from __future__ import annotations

from pathlib import Path

import click

from edge_runtime import generate_keypair, key_id, load_private_key, load_public_key, open_bundle, sign_bundle

from ._common import echo_json

__all__ = ["keys_group", "sign_cmd", "verify_cmd"]


@click.group("keys")
def keys_group() -> None:
    """Manage Ed25519 keys that sign bundles (the private key stays on the build machine, the
    public key is pinned on devices and in the cloud registry)."""


@keys_group.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for edge_signing.key (mode 0600) and edge_signing.pub.")
@click.option("--force", is_flag=True, help="Replace existing keys.")
@click.option("--json", "as_json", is_flag=True)
def generate_cmd(out_dir: Path, force: bool, as_json: bool) -> None:
    """Create a new signing key pair.

    \b
    Example:
      edge keys generate --out keys/
    """
    priv, pub = generate_keypair(out_dir, overwrite=force)
    kid = key_id(load_public_key(pub))
    if as_json:
        echo_json({"private_key": str(priv), "public_key": str(pub), "key_id": kid})
    else:
        click.echo(f"private key {priv} (keep it secret)\npublic key  {pub}\nkey id      {kid}")


@click.command("sign")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key file.")
def sign_cmd(bundle: Path, key_path: Path) -> None:
    """Sign BUNDLE (directory or .tar.gz) in place; its hashes are checked first.

    \b
    Example:
      edge sign mobilenet/ --key keys/edge_signing.key
    """
    key = load_private_key(key_path)
    sign_bundle(bundle, key)
    click.echo(f"signed {bundle} with key {key_id(key.public_key())}")


@click.command("verify")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--pubkey", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trusted Ed25519 public key (repeatable: any of them may have signed).")
@click.option("--json", "as_json", is_flag=True)
def verify_cmd(bundle: Path, pubkey: tuple[Path, ...], as_json: bool) -> None:
    """Check BUNDLE's signature against the trusted key(s) and every file against its hash.

    Exits 0 only when both hold; otherwise prints what is wrong and exits 1.

    \b
    Example:
      edge verify mobilenet.tar.gz --pubkey keys/edge_signing.pub
    """
    keys = [load_public_key(p) for p in pubkey]
    b = open_bundle(bundle, pubkey=keys)
    m = b.manifest
    if as_json:
        echo_json({"bundle": str(bundle), "valid": True, "name": m.name, "version": m.version,
                   "signed_by": b.signed_by, "files": len(m.files)})
    else:
        click.echo(f"OK {bundle}: {m.name} v{m.version}, signature by key {b.signed_by}, {len(m.files)} files verified")
    b.close()
