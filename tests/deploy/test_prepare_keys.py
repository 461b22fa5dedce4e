"""`edge pi prepare-image` with trusted keys and a device token: what lands on the card, what the
config on the card says, what is refused, and what the first boot does with it (run for real in a
Debian 12 root)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_deploy import DeviceSettings, device_token, prepare_image
from edge_device.agent import EXAMPLE_TOML, load_config
from tests.support.cli import run_cli
from tests.support.debian_roots import debian_root_amd64
from tests.support.pi_images import extract_boot, fsck_boot, region_sha256

# Looks like what the cloud service issues (a prefix and token_urlsafe); unique enough to grep for.
TOKEN = "edt_Zq8vR2mKx4LwN7pB3yTc9HsFj6DaUe1G"


def _public_pem(seed: int = 0) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(bytes([seed + 1]) * 32)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """An operator's folder: a config with host paths (absolute and relative), keys and secrets next to it."""
    d = tmp_path / "operator"
    (d / "keys").mkdir(parents=True)
    (d / "keys" / "release.pub").write_bytes(_public_pem(0))
    (d / "keys" / "backup.pem").write_bytes(_public_pem(1))
    (d / "cam-1.token").write_text(TOKEN + "\n")
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (d / "mqtt.txt").write_text("mqtt-secret\n")
    (d / "agent.toml").write_text(f"""\
device_id = "cam-1"
state_dir = "{d / 'state'}"
outputs = ["-", "{d / 'out' / 'records.jsonl'}", "sqlite:///{d / 'out' / 'records.db'}"]

[model]
bundle = "{d / 'models' / 'whatever.tar.gz'}"
trusted_keys = ["keys/release.pub"]
threads = 2

[source]
spec = "picamera"

[router]
mode = "cascade"
[router.breaker]
failures = 4

[cloud]
url = "https://edge-cloud.example.com"

[telemetry]
mqtt_url = "mqtts://broker.example.com:8883"
password_file = "mqtt.txt"
ca_file = "{d / 'ca.pem'}"
outbox = "{d / 'state' / 'outbox.db'}"
""")
    return d


def _paths_in(config: dict[str, object]) -> list[str]:
    """Every string value of the config that is a file system path (or holds one)."""
    out: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and "/" in value and "://" not in value.replace("sqlite:///", ""):
            out.append(value.removeprefix("sqlite:///"))

    walk(config)
    return out


def test_keys_and_token_land_on_the_card_and_the_config_names_device_paths_only(
    pi_image, tmp_path, host, edge_wheel, mobilenet_bundle, capsys
):
    image = pi_image("bookworm")
    code, out, err = run_cli(
        ["-vv", "pi", "prepare-image", str(image.path), "--bundle", str(mobilenet_bundle),
         "--config", str(host / "agent.toml"), "--wheel", str(edge_wheel),
         "--trusted-key", str(host / "keys" / "release.pub"), "--trusted-key", str(host / "keys" / "backup.pem"),
         "--device-token-file", str(host / "cam-1.token")],
        capsys,
    )
    assert code == 0, err
    assert TOKEN not in out and TOKEN not in err
    assert "/etc/edge/keys/release.pub" in out and "/etc/edge/device.token" in out
    files = extract_boot(image, tmp_path / "boot")

    assert files["/edge/keys/release.pub"] == _public_pem(0)
    assert files["/edge/keys/backup.pub"] == _public_pem(1)
    assert files["/edge/device.token"] == (TOKEN + "\n").encode()
    assert files["/edge/tls/ca.pem"] == (host / "ca.pem").read_bytes()
    assert files["/edge/mqtt.password"] == b"mqtt-secret\n"

    text = files["/edge/agent.toml"].decode()
    assert str(tmp_path) not in text and "/tmp" not in text and "operator" not in text
    assert TOKEN not in text, "the token travels in its own 0600 file, not in agent.toml"
    card = tomllib.loads(text)
    assert card["model"]["bundle"] == "/var/lib/edge/bundles/mobilenet_v2-v1.tar.gz"
    assert card["model"]["trusted_keys"] == ["/etc/edge/keys/release.pub", "/etc/edge/keys/backup.pub"]
    assert card["cloud"]["token_file"] == "/etc/edge/device.token"
    assert card["state_dir"] == "/var/lib/edge"
    assert card["outputs"] == ["-", "/var/lib/edge/records.jsonl", "sqlite:////var/lib/edge/records.db"]
    assert card["telemetry"]["outbox"] == "/var/lib/edge/outbox.db"
    assert card["telemetry"]["ca_file"] == "/etc/edge/tls/ca.pem"
    assert card["telemetry"]["password_file"] == "/etc/edge/mqtt.password"
    # Untouched settings survive the rewrite.
    assert card["router"] == {"mode": "cascade", "breaker": {"failures": 4}}
    assert card["model"]["threads"] == 2
    # Every path the device config names is one the card carries or the device's own state directory.
    carried = {"/var/lib/edge/bundles/mobilenet_v2-v1.tar.gz"} | {
        "/etc/edge/" + p.removeprefix("/edge/") for p in files if p.startswith("/edge/")
    }
    for path in _paths_in(card):
        assert path in carried or path == "/var/lib/edge" or path.startswith("/var/lib/edge/"), path
    # And the agent's own loader takes it as it is.
    (tmp_path / "device.toml").write_bytes(files["/edge/agent.toml"])
    cfg = load_config(tmp_path / "device.toml", environ={})
    assert [str(p) for p in cfg.model.trusted_keys] == card["model"]["trusted_keys"]

    script = files["/edge/firstboot.sh"].decode()
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert 'install -m 0600 -o edge -g edge "$HERE"/device.token /etc/edge/device.token' in script
    assert 'install -m 0644 -o root -g root "$HERE"/keys/release.pub /etc/edge/keys/release.pub' in script
    named = set(re.findall(r'"\$HERE"/(\S+)', script))
    assert named <= {p.removeprefix("/edge/") for p in files if p.startswith("/edge/")}, named
    fsck_boot(image, tmp_path)


def test_a_token_on_the_command_line_is_never_shown(pi_image, tmp_path, host, edge_wheel, mobilenet_bundle,
                                                     capsys, caplog):
    image = pi_image("trixie")
    caplog.set_level(logging.DEBUG)
    args = ["pi", "prepare-image", str(image.path), "--bundle", str(mobilenet_bundle),
            "--config", str(host / "agent.toml"), "--wheel", str(edge_wheel),
            "--trusted-key", str(host / "keys" / "release.pub"), "--device-token", TOKEN]
    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == 0, err
    assert TOKEN not in out + err
    assert not [r for r in caplog.records if TOKEN in r.getMessage()]

    report = json.loads(out)
    # Not even the token file's hash: a hash lets anyone with the output test guesses.
    assert report["files"]["/edge/device.token"] is None
    assert report["device"]["token_file"] == "/etc/edge/device.token"
    assert report["device"]["trusted_keys"] == ["/etc/edge/keys/release.pub"]

    code, out, err = run_cli(["-vv", *args], capsys)
    assert code == 0, err
    assert TOKEN not in out + err
    assert "/edge/device.token  (secret)" in out
    files = extract_boot(image, tmp_path / "boot")
    assert files["/edge/device.token"] == (TOKEN + "\n").encode()
    assert TOKEN.encode() not in b"".join(v for k, v in files.items() if k != "/edge/device.token")


def test_a_repeated_preparation_drops_keys_and_token_no_longer_given(pi_image, tmp_path, host, edge_wheel,
                                                                     mobilenet_bundle):
    image = pi_image("bookworm")
    config = host / "offline.toml"
    config.write_text('device_id = "cam-1"\n[source]\nspec = "0"\n')
    first = prepare_image(image.path, bundle=mobilenet_bundle, config=config, wheel=edge_wheel,
                          trusted_keys=[host / "keys" / "release.pub"], device_token=device_token(TOKEN))
    assert first.secrets == ("/edge/device.token",)
    second = prepare_image(image.path, bundle=mobilenet_bundle, config=config, wheel=edge_wheel,
                           settings=DeviceSettings())
    assert set(second.removed) == {"/edge/device.token", "/edge/keys/release.pub"}
    files = extract_boot(image, tmp_path / "boot")
    assert "/edge/device.token" not in files
    card = tomllib.loads(files["/edge/agent.toml"].decode())
    assert card == {"device_id": "cam-1", "source": {"spec": "0"},
                    "model": {"bundle": "/var/lib/edge/bundles/mobilenet_v2-v1.tar.gz"}}


# -- refused: exit 1, one line naming the key and why, the image unchanged -----------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown-key", "device: unknown key"),
        ("online-without-cloud", "router.mode = 'online' needs cloud.url"),
        ("updates-without-keys", "updates need model.trusted_keys"),
        ("bad-port", "http.port"),
        ("missing-key-file", "model.trusted_keys: "),
        ("private-key", "is a private key"),
        ("rsa-key", "an Ed25519 public key is needed"),
        ("missing-token-file", "cloud.token_file: "),
        ("empty-token-file", "the device token is empty"),
        ("token-with-space", "printable ASCII without spaces"),
        ("two-tokens", "--device-token or --device-token-file, not both"),
        ("missing-ca-file", "telemetry.ca_file: "),
        ("same-output-file", "outputs: two outputs would write the same file"),
        ("example-config-host-files", "telemetry.password_file: /etc/edge/mqtt.password"),
    ],
)
def test_a_config_the_device_would_refuse_is_refused_and_the_image_unchanged(
    case, message, pi_image, tmp_path, host, edge_wheel, mobilenet_bundle, agent_config, ssh_keypair, capsys
):
    image = pi_image("bookworm")
    before = region_sha256(image.path, 0, image.path.stat().st_size)
    config = host / "agent.toml"
    base = config.read_text()
    extra: list[str] = ["--trusted-key", str(host / "keys" / "release.pub"), "--device-token", TOKEN]
    if case == "unknown-key":
        config.write_text(base + '\n[device]\nid = "greenhouse-1"\n')  # [device] is not a key the agent knows
    elif case == "online-without-cloud":
        config.write_text(base.replace('mode = "cascade"', 'mode = "online"')
                          .replace('url = "https://edge-cloud.example.com"', ""))
    elif case == "updates-without-keys":
        config.write_text(base.replace('trusted_keys = ["keys/release.pub"]', ""))
        extra = ["--device-token", TOKEN]
    elif case == "bad-port":
        config.write_text(base + "\n[http]\nenabled = true\nport = 99999\n")
    elif case == "missing-key-file":
        config.write_text(base.replace("keys/release.pub", "keys/gone.pub"))
        extra = []
    elif case == "private-key":
        key = Ed25519PrivateKey.generate()
        (host / "signing.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        extra = ["--trusted-key", str(host / "signing.pem")]
    elif case == "rsa-key":
        rsa_pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        (host / "rsa.pub").write_bytes(rsa_pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        extra = ["--trusted-key", str(host / "rsa.pub")]
    elif case == "missing-token-file":
        config.write_text(base.replace('url = "https://edge-cloud.example.com"',
                                       'url = "https://edge-cloud.example.com"\ntoken_file = "nope.token"'))
        extra = []
    elif case == "empty-token-file":
        (host / "empty.token").write_text("\n")
        extra = ["--device-token-file", str(host / "empty.token")]
    elif case == "token-with-space":
        extra = ["--device-token", TOKEN[:10] + " " + TOKEN[10:]]
    elif case == "two-tokens":
        extra = ["--device-token", TOKEN, "--device-token-file", str(host / "cam-1.token")]
    elif case == "missing-ca-file":
        (host / "ca.pem").unlink()
    elif case == "same-output-file":
        config.write_text(base.replace('"-", ', f'"-", "{host / "elsewhere" / "records.jsonl"}", '))
    elif case == "example-config-host-files":
        # The stock example names device paths that do not exist on this computer: it must say which.
        config.write_text(EXAMPLE_TOML)
    code, out, err = run_cli(
        ["pi", "prepare-image", str(image.path), "--bundle", str(mobilenet_bundle), "--config", str(config),
         "--wheel", str(edge_wheel), "--ssh-key", str(ssh_keypair[0]), *extra],
        capsys,
    )
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert TOKEN not in out + err
    assert TOKEN[:10] not in err
    assert region_sha256(image.path, 0, image.path.stat().st_size) == before


# -- the first boot, replayed in a Debian 12 root ---------------------------------------------------------------

SYSTEMCTL_SHIM = """#!/bin/sh
echo "$*" >>/var/log/systemctl.calls
"""

# Stands in for install-on-pi.sh (tested on its own in test_install_script.py, where it pip-installs
# the wheel): it does what firstboot.sh relies on, in the installer's own words: the user edge,
# /etc/edge, the config 0640 root:edge, the bundle under /var/lib/edge/bundles, the unit enabled.
INSTALLER_STUB = """#!/bin/bash
set -euo pipefail
printf '%s\\n' "$@" >/var/log/installer.args
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --wheel) shift 2 ;;
        *) shift ;;
    esac
done
getent group edge >/dev/null || groupadd --system edge
getent passwd edge >/dev/null || useradd --system --gid edge --home-dir /var/lib/edge --no-create-home \\
    --shell /usr/sbin/nologin edge
install -d -m 755 -o root -g root /etc/edge
install -d -m 750 -o edge -g edge /var/lib/edge /var/lib/edge/bundles
install -m 640 -o root -g edge "$CONFIG" /etc/edge/agent.toml
install -m 640 -o edge -g edge "$BUNDLE" "/var/lib/edge/bundles/$(basename "$BUNDLE")"
systemctl enable edge-agent.service
"""


def test_first_boot_installs_keys_and_token_where_the_config_says_with_their_modes(
    pi_image, tmp_path, host, edge_wheel, mobilenet_bundle
):
    image = pi_image("trixie")
    prepare_image(image.path, bundle=mobilenet_bundle, config=host / "agent.toml", wheel=edge_wheel,
                  trusted_keys=[host / "keys" / "release.pub"], device_token=device_token(TOKEN))
    files = extract_boot(image, tmp_path / "card")

    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(debian_root_amd64()), str(root)], check=True)
    shim = root / "usr/local/sbin/systemctl"
    shim.write_text(SYSTEMCTL_SHIM)
    shim.chmod(0o755)
    boot = root / "boot/firmware"
    boot.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tmp_path / "card" / "edge", boot / "edge")
    (boot / "edge/install-on-pi.sh").write_text(INSTALLER_STUB)

    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    proc = subprocess.run(["chroot", str(root), "/bin/sh", "/boot/firmware/edge/firstboot.sh"], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr

    args = (root / "var/log/installer.args").read_text().splitlines()
    assert args[0] == "--no-start", "the agent must not start before its keys and token are there"
    calls = (root / "var/log/systemctl.calls").read_text().splitlines()
    assert calls == ["enable edge-agent.service", "restart --no-block edge-agent.service",
                     "disable edge-firstboot.service"]

    edge_uid = next(int(line.split(":")[2]) for line in (root / "etc/passwd").read_text().splitlines()
                    if line.startswith("edge:"))

    def mode_owner(path: Path) -> tuple[int, int]:
        st = path.stat()
        return stat.S_IMODE(st.st_mode), st.st_uid

    # The config installed is the one from the card, and every file it names is where it says.
    cfg = load_config(root / "etc/edge/agent.toml", environ={})
    [key] = cfg.model.trusted_keys
    assert str(key) == "/etc/edge/keys/release.pub"
    assert (root / "etc/edge/keys/release.pub").read_bytes() == _public_pem(0)
    assert mode_owner(root / "etc/edge/keys/release.pub") == (0o644, 0)
    assert mode_owner(root / "etc/edge/keys") == (0o755, 0)
    assert str(cfg.cloud.token_file) == "/etc/edge/device.token"
    assert (root / "etc/edge/device.token").read_text() == TOKEN + "\n"
    assert mode_owner(root / "etc/edge/device.token") == (0o600, edge_uid)
    assert mode_owner(root / "etc/edge/mqtt.password") == (0o600, edge_uid)
    assert mode_owner(root / "etc/edge/tls/ca.pem") == (0o644, 0)
    assert (root / str(cfg.model.bundle).lstrip("/")).read_bytes() == files["/edge/mobilenet_v2-v1.tar.gz"]
    assert cfg.state_dir == Path("/var/lib/edge") and (root / "var/lib/edge").is_dir()
    # What the agent reads at start, read the agent's way inside the root.
    rooted = cfg.model_copy(update={"cloud": cfg.cloud.model_copy(
        update={"token_file": root / "etc/edge/device.token"})})
    assert rooted.cloud_token() == TOKEN

    # Secrets leave the boot partition (readable by every user); the public keys may stay.
    left = {str(p.relative_to(boot)) for p in boot.rglob("*") if p.is_file()}
    assert "edge/device.token" not in left and "edge/mqtt.password" not in left and "edge/agent.toml" not in left
    assert "edge/keys/release.pub" in left
    assert not os.path.exists(root / "etc/edge/device.token.tmp")


def test_values_other_than_paths_come_through_unchanged(pi_image, tmp_path, host, edge_wheel, mobilenet_bundle):
    image = pi_image("trixie")
    config = host / "odd.toml"
    spec = 'rtsp://viewer:p"w\\\\x@cam.local/Straße\tfeed'
    config.write_text(
        'device_id = "cam-1"\n'
        f"[source]\nspec = {json.dumps(spec, ensure_ascii=False)}\nrepeat = true\n"
        "[router]\nmode = \"offline\"\nthreshold = 0.35\n[router.breaker]\nbackoff_s = 2.5\n"
        "[http]\nenabled = true\nport = 8781\n"
        "[home_assistant]\n"
    )
    prepare_image(image.path, bundle=mobilenet_bundle, config=config, wheel=edge_wheel)
    card = tomllib.loads(extract_boot(image, tmp_path / "boot")["/edge/agent.toml"].decode())
    assert card["source"] == {"spec": spec, "repeat": True}
    assert card["router"] == {"mode": "offline", "threshold": 0.35, "breaker": {"backoff_s": 2.5}}
    assert card["http"] == {"enabled": True, "port": 8781}
    assert card["home_assistant"] == {}
