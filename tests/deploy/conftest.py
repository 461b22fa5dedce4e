"""Fixtures of the deploy tests: keys, configs, the project wheel, bundles, Pi images."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.pi_images import Kind, PiImage, make_pi_image

REQUIRED_TOOLS = ("sfdisk", "mkfs.vfat", "mkfs.ext4", "fsck.vfat", "mcopy", "mmd", "mdir")


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        # Fail, never skip: `make test` installs these (apt: fdisk dosfstools e2fsprogs mtools).
        pytest.fail(f"tools missing for the deploy tests: {', '.join(missing)}")


@pytest.fixture(scope="session")
def ssh_keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(public key file, private key file) of a fresh Ed25519 key in OpenSSH format."""
    d = tmp_path_factory.mktemp("ssh")
    key = Ed25519PrivateKey.generate()
    pub = d / "id_ed25519.pub"
    priv = d / "id_ed25519"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b" tester@laptop\n"
    )
    priv.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                          serialization.NoEncryption())
    )
    return pub, priv


@pytest.fixture(scope="session")
def agent_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "agent.toml"
    path.write_text('device_id = "greenhouse-1"\n\n[source]\nspec = "picamera"\n\n'
                    '[cloud]\nurl = "https://edge.example"\ntoken = "s3cret"\n\n[updates]\nenabled = false\n')
    return path


@pytest.fixture(scope="session")
def edge_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once from this checkout by the code under test."""
    from edge_deploy import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def bundle_archive(tmp_path_factory: pytest.TempPathFactory, mobilenet_bundle: Path) -> Path:
    from edge_runtime import pack_bundle

    return pack_bundle(mobilenet_bundle, tmp_path_factory.mktemp("archive") / "mobilenet_v2-v1.tar.gz")


@pytest.fixture
def pi_image(tmp_path: Path) -> Callable[[Kind], PiImage]:
    def make(kind: Kind = "bookworm") -> PiImage:
        return make_pi_image(tmp_path / f"raspios-{kind}.img", kind)

    return make
