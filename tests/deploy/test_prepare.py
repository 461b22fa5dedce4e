"""`edge pi prepare-image` on real partitioned disk images with a FAT32 boot partition."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from edge_deploy import (
    DeployInputError,
    DeviceSettings,
    ImageError,
    build_wheel,
    prepare_image,
    read_ssh_keys,
    read_wifi,
)
from edge_runtime import open_bundle
from tests.support.cli import run_cli
from tests.support.pi_images import BOOKWORM_CMDLINE, TRIXIE_CMDLINE, extract_boot, fsck_boot, region_sha256

ROOT = Path(__file__).resolve().parents[2]
HOOK = ("systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot "
        "systemd.unit=kernel-command-line.target")
PASSPHRASE = "correct horse battery staple"
SSID = 'Greenhouse "North"'


@pytest.fixture
def psk_file(tmp_path: Path) -> Path:
    path = tmp_path / "wifi-psk.txt"
    path.write_text(PASSPHRASE + "\n")
    return path


def _expected_psk() -> str:
    # Independent derivation (IEEE 802.11i): what wpa_passphrase prints for this SSID and passphrase.
    return hashlib.pbkdf2_hmac("sha1", PASSPHRASE.encode(), SSID.encode(), 4096, 32).hex()


def _prepare_args(image: Path, bundle: Path, config: Path, wheel: Path, key: Path, psk: Path) -> list[str]:
    return ["pi", "prepare-image", str(image), "--bundle", str(bundle), "--config", str(config),
            "--wheel", str(wheel), "--hostname", "greenhouse-1", "--user", "grower", "--ssh-key", str(key),
            "--wifi-ssid", SSID, "--wifi-psk-file", str(psk), "--wifi-country", "de"]


def _check_edge_folder(files: dict[str, bytes], wheel: Path, bundle_archive: Path, config: Path) -> None:
    assert files[f"/edge/{wheel.name}"] == wheel.read_bytes()
    assert files["/edge/mobilenet_v2-v1.tar.gz"] == bundle_archive.read_bytes()
    # The card's config is the user's with the host paths rewritten to where the device puts things.
    bundle_on_device = "/var/lib/edge/bundles/mobilenet_v2-v1.tar.gz"
    expected = {**tomllib.loads(config.read_text()), "model": {"bundle": bundle_on_device}}
    assert tomllib.loads(files["/edge/agent.toml"].decode()) == expected
    assert files["/edge/install-on-pi.sh"] == (ROOT / "scripts/install-on-pi.sh").read_bytes()
    assert sorted(p for p in files if p.startswith("/edge/")) == sorted([
        f"/edge/{wheel.name}", "/edge/mobilenet_v2-v1.tar.gz", "/edge/agent.toml", "/edge/install-on-pi.sh",
        "/edge/firstboot.sh", "/edge/edge-firstboot.service",
    ])
    # The install step names only files that are there, relative to its own folder.
    script = files["/edge/firstboot.sh"].decode()
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    named = re.findall(r'"\$HERE"/(\S+)', script)
    assert set(named) == {"install-on-pi.sh", wheel.name, "mobilenet_v2-v1.tar.gz", "agent.toml"}
    assert "--wheel" in script and "--bundle" in script and "--config" in script
    assert "systemctl disable edge-firstboot.service" in script
    unit = files["/edge/edge-firstboot.service"].decode()
    assert "ExecStart=/bin/sh /boot/firmware/edge/firstboot.sh" in unit
    assert "After=network-online.target" in unit and "Restart=on-failure" in unit


def _verify_unit(text: str, tmp_path: Path) -> None:
    unit = tmp_path / "edge-firstboot.service"
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bookworm_image_gets_firstrun_and_everything_byte_for_byte(
    pi_image, tmp_path, edge_wheel, mobilenet_bundle, bundle_archive, agent_config, ssh_keypair, psk_file, capsys
):
    image = pi_image("bookworm")
    mbr_before = region_sha256(image.path, 0, 512)
    root_before = region_sha256(image.path, image.root_start, image.root_size)

    code, out, err = run_cli(_prepare_args(image.path, mobilenet_bundle, agent_config, edge_wheel, ssh_keypair[0],
                                        psk_file), capsys)
    assert code == 0, err
    assert "first boot by firstrun" in out
    assert "/var/lib/edge/bundles/mobilenet_v2-v1.tar.gz" in out

    files = extract_boot(image, tmp_path / "boot")
    _check_edge_folder(files, edge_wheel, bundle_archive, agent_config)
    # Stock files are untouched, and nothing else appeared.
    for path, data in image.files.items():
        if path != "/cmdline.txt":
            assert files[path] == data, path
    assert set(files) == set(image.files) | {p for p in files if p.startswith("/edge/")} | {"/firstrun.sh"}
    assert not any(name in files for name in ("/user-data", "/network-config", "/meta-data"))

    assert files["/cmdline.txt"] == (BOOKWORM_CMDLINE.rstrip("\n") + " " + HOOK + "\n").encode()
    firstrun = files["/firstrun.sh"].decode()
    subprocess.run(["bash", "-n"], input=firstrun, text=True, check=True)
    pubkey = ssh_keypair[0].read_text().strip()
    assert "set_hostname greenhouse-1" in firstrun
    assert f"enable_ssh -k '{pubkey}'" in firstrun
    assert "/usr/lib/userconf-pi/userconf grower '*'" in firstrun
    assert _expected_psk() in firstrun
    assert PASSPHRASE not in firstrun, "the WiFi passphrase itself must never reach the card"
    assert "install -m 0644 /boot/firmware/edge/edge-firstboot.service /etc/systemd/system/" in firstrun
    assert firstrun.rstrip().endswith("rm -f /boot/firmware/firstrun.sh\n"
                                      "sed -i 's| systemd.run.*||g' /boot/firmware/cmdline.txt\nexit 0")
    _verify_unit(files["/edge/edge-firstboot.service"].decode(), tmp_path)

    # Only the boot partition's contents changed; the file system is consistent.
    assert region_sha256(image.path, 0, 512) == mbr_before
    assert region_sha256(image.path, image.root_start, image.root_size) == root_before
    fsck_boot(image, tmp_path)


def test_trixie_image_gets_cloud_init(
    pi_image, tmp_path, edge_wheel, bundle_archive, agent_config, ssh_keypair, psk_file, capsys
):
    image = pi_image("trixie")
    args = _prepare_args(image.path, bundle_archive, agent_config, edge_wheel, ssh_keypair[0], psk_file)
    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == 0, err
    files = extract_boot(image, tmp_path / "boot")
    report = json.loads(out)
    assert report["first_boot"] == "cloud-init"
    assert report["partition"] == {"number": 1, "start": image.boot_start, "size": image.boot_size}
    assert report["files"] == {path: hashlib.sha256(files[path]).hexdigest() for path in report["files"]}
    assert set(report["files"]) >= {"/user-data", "/network-config", "/meta-data", "/edge/agent.toml"}
    _check_edge_folder(files, edge_wheel, bundle_archive, agent_config)
    assert files["/cmdline.txt"] == TRIXIE_CMDLINE.encode(), "cloud-init images need no cmdline hook"
    assert "/firstrun.sh" not in files

    user_data_text = files["/user-data"].decode()
    assert user_data_text.startswith("#cloud-config\n")
    user_data = yaml.safe_load(user_data_text)
    assert user_data["hostname"] == "greenhouse-1"
    [user] = user_data["users"]
    assert user["name"] == "grower"
    assert user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [ssh_keypair[0].read_text().strip()]
    assert user_data["enable_ssh"] is True and user_data["ssh_pwauth"] is False
    commands = [c[2] for c in user_data["runcmd"]]
    assert commands == [
        "install -m 0644 /boot/firmware/edge/edge-firstboot.service /etc/systemd/system/edge-firstboot.service",
        "systemctl enable edge-firstboot.service",
        "systemctl start --no-block edge-firstboot.service",
    ]
    network = yaml.safe_load(files["/network-config"])["network"]
    wlan = network["wifis"]["wlan0"]
    assert network["version"] == 2
    assert wlan["regulatory-domain"] == "DE"
    assert wlan["access-points"] == {SSID: {"password": _expected_psk()}}
    assert PASSPHRASE.encode() not in b"".join(files.values())
    meta = yaml.safe_load(files["/meta-data"])
    assert re.fullmatch(r"edge-[0-9a-f]{16}", meta["instance-id"])
    fsck_boot(image, tmp_path)


def test_preparing_twice_gives_the_same_files(pi_image, tmp_path, edge_wheel, mobilenet_bundle, agent_config,
                                               ssh_keypair, psk_file):
    image = pi_image("bookworm")
    settings = DeviceSettings(hostname="cam-2", ssh_keys=read_ssh_keys(ssh_keypair[0]),
                              wifi=read_wifi(SSID, psk_file, "GB"))
    first = prepare_image(image.path, bundle=mobilenet_bundle, config=agent_config, settings=settings,
                          wheel=edge_wheel)
    files_first = extract_boot(image, tmp_path / "first")
    second = prepare_image(image.path, bundle=mobilenet_bundle, config=agent_config, settings=settings,
                           wheel=edge_wheel)
    files_second = extract_boot(image, tmp_path / "second")
    assert files_first == files_second
    assert first.files == second.files
    assert second.removed == ()
    assert files_second["/cmdline.txt"].decode().count("systemd.run=") == 1
    fsck_boot(image, tmp_path)


def test_the_wheel_built_from_the_checkout_is_reproducible(tmp_path):
    # A snapshot of the sources, so files other work adds meanwhile cannot change the second build.
    snapshot = tmp_path / "src"
    snapshot.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in ("pyproject.toml", "README.md"):
            shutil.copy2(entry, snapshot / entry.name)
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            shutil.copytree(entry, snapshot / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
    one = build_wheel(tmp_path / "one", root=snapshot)
    two = build_wheel(tmp_path / "two", root=snapshot)
    assert one.read_bytes() == two.read_bytes()
    with zipfile.ZipFile(one) as zf:
        names = set(zf.namelist())
    assert {"edge_deploy/data/install-on-pi.sh", "edge_deploy/data/edge-agent.service",
            "device_profiles/data/rpi-4b.toml"} <= names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    assert not (snapshot / "build").exists(), "the build must not write into the source tree"


def test_a_new_preparation_replaces_the_old_one(pi_image, tmp_path, edge_wheel, mobilenet_bundle, agent_config):
    image = pi_image("trixie")
    prepare_image(image.path, bundle=mobilenet_bundle, config=agent_config, wheel=edge_wheel,
                  settings=DeviceSettings(hostname="old-name"))
    # Forcing firstrun on top, then cloud-init again: no stale hook, no stale script survives.
    prepare_image(image.path, bundle=mobilenet_bundle, config=agent_config, wheel=edge_wheel,
                  settings=DeviceSettings(hostname="mid-name"), mechanism="firstrun")
    assert "firstrun.sh" in extract_boot(image, tmp_path / "mid")["/cmdline.txt"].decode()
    result = prepare_image(image.path, bundle=mobilenet_bundle, config=agent_config, wheel=edge_wheel,
                           settings=DeviceSettings(hostname="new-name"))
    files = extract_boot(image, tmp_path / "after")
    assert result.mechanism == "cloud-init"
    assert "/firstrun.sh" in result.removed and "/firstrun.sh" not in files
    assert files["/cmdline.txt"] == TRIXIE_CMDLINE.encode()
    assert yaml.safe_load(files["/user-data"])["hostname"] == "new-name"


def test_bundle_on_the_image_is_the_verified_bundle(pi_image, tmp_path, edge_wheel, mobilenet_bundle, agent_config):
    image = pi_image("bookworm")
    prepare_image(image.path, bundle=mobilenet_bundle, config=agent_config, wheel=edge_wheel)
    archive = tmp_path / "boot" / "edge" / "mobilenet_v2-v1.tar.gz"
    extract_boot(image, tmp_path / "boot")
    with tarfile.open(archive) as tf:
        assert sorted(tf.getnames()) == sorted(p.name for p in mobilenet_bundle.iterdir())
    bundle = open_bundle(archive)
    assert (bundle.manifest.name, bundle.manifest.version) == ("mobilenet_v2", 1)
    bundle.close()


# -- bad input: one line naming the problem, and the image is not changed -----------------------------------


def _image_digest(path: Path) -> str:
    return region_sha256(path, 0, path.stat().st_size)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("private-key", "is a private key; pass the public key"),
        ("garbage-key", "the key data is not valid base64 of an SSH key"),
        ("text-key", "not an OpenSSH public key"),
        ("short-psk", "a WPA passphrase is 8 to 63 printable ASCII characters"),
        ("no-country", "WiFi needs all three of --wifi-ssid, --wifi-psk-file and --wifi-country"),
        ("bad-country", "must be a two-letter ISO 3166 code"),
        ("bad-hostname", "host name 'Green_House' is not valid"),
        ("reserved-user", "user name 'edge' is reserved"),
        ("bad-toml", "agent config is not valid TOML"),
        ("tampered-bundle", "not a usable bundle"),
        ("not-a-wheel", "not a readable wheel (zip) file"),
        ("other-wheel", "not an edge-runtime wheel"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    case, message, pi_image, tmp_path, edge_wheel, mobilenet_bundle, agent_config, ssh_keypair, psk_file, capsys
):
    image = pi_image("bookworm")
    before = _image_digest(image.path)
    args = {"bundle": str(mobilenet_bundle), "config": str(agent_config), "wheel": str(edge_wheel),
            "ssh-key": str(ssh_keypair[0]), "wifi-ssid": SSID, "wifi-psk-file": str(psk_file),
            "wifi-country": "GB", "hostname": "green-1", "user": "pi"}
    if case == "private-key":
        args["ssh-key"] = str(ssh_keypair[1])
    elif case == "garbage-key":
        (tmp_path / "key.pub").write_text("ssh-ed25519 not-base64!!\n")
        args["ssh-key"] = str(tmp_path / "key.pub")
    elif case == "text-key":
        (tmp_path / "notes.pub").write_text("remember to buy milk\n")
        args["ssh-key"] = str(tmp_path / "notes.pub")
    elif case == "short-psk":
        (tmp_path / "short.txt").write_text("1234567\n")
        args["wifi-psk-file"] = str(tmp_path / "short.txt")
    elif case == "no-country":
        del args["wifi-country"]
    elif case == "bad-country":
        args["wifi-country"] = "Germany"
    elif case == "bad-hostname":
        args["hostname"] = "Green_House"
    elif case == "reserved-user":
        args["user"] = "edge"
    elif case == "bad-toml":
        (tmp_path / "agent.toml").write_text("[device\nid = 1\n")
        args["config"] = str(tmp_path / "agent.toml")
    elif case == "tampered-bundle":
        copy = tmp_path / "bundle"
        copy.mkdir()
        for f in mobilenet_bundle.iterdir():
            copy.joinpath(f.name).write_bytes(f.read_bytes())
        (copy / "labels.txt").write_text("tampered\n")
        args["bundle"] = str(copy)
    elif case == "not-a-wheel":
        (tmp_path / "edge_runtime-9-py3-none-any.whl").write_bytes(b"not a zip")
        args["wheel"] = str(tmp_path / "edge_runtime-9-py3-none-any.whl")
    elif case == "other-wheel":
        with zipfile.ZipFile(tmp_path / "requests-2.0-py3-none-any.whl", "w") as zf:
            zf.writestr("requests/__init__.py", "")
        args["wheel"] = str(tmp_path / "requests-2.0-py3-none-any.whl")
    argv = ["pi", "prepare-image", str(image.path)]
    for key, value in args.items():
        argv += [f"--{key}", value]
    code, _out, err = run_cli(argv, capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert _image_digest(image.path) == before


def test_images_that_are_not_raspberry_pi_os_are_refused(pi_image, tmp_path, edge_wheel, mobilenet_bundle,
                                                         agent_config):
    def refused(path: Path) -> str:
        before = _image_digest(path)
        with pytest.raises(ImageError) as info:
            prepare_image(path, bundle=mobilenet_bundle, config=agent_config, wheel=edge_wheel)
        assert _image_digest(path) == before
        return str(info.value)

    xz = tmp_path / "raspios.img.xz"
    xz.write_bytes(b"\xfd7zXZ\x00" + b"\x00" * 4096)
    assert "xz-compressed" in refused(xz) and "xz -dk raspios.img.xz" in refused(xz)

    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\x00" * 65536)
    assert "no partition table" in refused(blank)

    linux_only = tmp_path / "linux.img"
    with linux_only.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["sfdisk", "--quiet", str(linux_only)], input=b"label: dos\nstart=2048, type=83\n", check=True)
    assert "no FAT boot partition" in refused(linux_only)

    truncated = pi_image("bookworm").path
    with truncated.open("r+b") as f:
        f.truncate(100 * 1024 * 1024)
    assert "truncated" in refused(truncated)

    no_cmdline = pi_image("no-cmdline").path
    assert "not a Raspberry Pi OS boot partition" in refused(no_cmdline)

    with pytest.raises(ImageError, match="no such image file"):
        prepare_image(tmp_path / "missing.img", bundle=mobilenet_bundle, config=agent_config, wheel=edge_wheel)


def test_ssh_key_and_wifi_readers(tmp_path, ssh_keypair):
    keys = tmp_path / "authorized_keys"
    pub = ssh_keypair[0].read_text().strip()
    keys.write_text(f"# team keys\n{pub}\n\n{pub.replace('tester@laptop', 'ops')}\n")
    assert read_ssh_keys(keys) == (pub, pub.replace("tester@laptop", "ops"))
    mismatched = tmp_path / "mismatch.pub"
    mismatched.write_text("ssh-rsa " + pub.split()[1] + "\n")
    with pytest.raises(DeployInputError, match="is a 'ssh-ed25519' key but the line says 'ssh-rsa'"):
        read_ssh_keys(mismatched)
    hexpsk = tmp_path / "hex.txt"
    hexpsk.write_text("AB" * 32)
    assert read_wifi("x", hexpsk, "us").psk == "ab" * 32
