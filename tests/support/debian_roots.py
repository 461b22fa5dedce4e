"""Debian roots and wheel sets the deploy tests build once and reuse.

Everything is built below ``$EDGE_TEST_CACHE`` (default ``/var/cache/edge-tests``), each item in a
temporary directory that is renamed into place only when complete, under a lock, so an interrupted
build is rebuilt next time and two test processes never build the same thing at once. Delete the
directory to rebuild from scratch.

- ``debian-bookworm-amd64``: ``debootstrap --variant=minbase --include=python3`` of Debian 12, the
  stand-in for a running Raspberry Pi OS (also Debian 12) in which ``install-on-pi.sh`` runs.
- ``debian-bookworm-arm64``: the arm64 packages of Python 3.11 fetched by
  ``debootstrap --foreign --arch=arm64`` and unpacked with ``dpkg-deb -x``; no second stage is run,
  because that needs binfmt_misc, which this sandbox cannot mount. Programs in it run with
  ``qemu-aarch64-static -L ROOT``, which needs no binfmt.
- ``debian-bookworm-armhf-<key>``: the same for 32-bit ARM (armhf, what 32-bit Raspberry Pi OS
  runs), with Debian's own numpy, Pillow and OpenCV (python3-opencv) unpacked as well; programs
  run with ``qemu-arm-static -L ROOT``.
- wheelhouses: the wheels pip needs, downloaded from PyPI once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.paths import ROOT

__all__ = [
    "ARMHF_DEBIAN_PACKAGES",
    "aarch64_site",
    "armv7l_site",
    "cache_dir",
    "cached",
    "debian_mirror",
    "debian_root_amd64",
    "debian_root_arm64",
    "debian_root_armhf",
    "project_requirements",
    "wheelhouse",
]

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGE_TEST_CACHE", "/var/cache/edge-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(cache_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """The cache entry ``name``, built by ``build(tmpdir)`` the first time."""
    final = cache_dir() / name
    with _locked(name):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir()))
        try:
            build(tmp)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def debian_mirror() -> str:
    """The Debian mirror apt on this machine is configured with (deb822 or one-line format)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                    return uris.group(1).rstrip("/")
        else:
            m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M)
            if m and "security" not in m.group(1):
                return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def _run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def debian_root_amd64() -> Path:
    def build(tmp: Path) -> None:
        root = tmp / "root"
        _run(["debootstrap", "--variant=minbase", "--include=python3", SUITE, str(root), debian_mirror()],
             stdout=subprocess.DEVNULL)
        # apt inside the copy needs package lists to install python3-venv offline-fast later.
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)

    return cached(f"debian-{SUITE}-amd64", build) / "root"


def debian_root_arm64() -> Path:
    def build(tmp: Path) -> None:
        _unpack_foreign(tmp / "root", "arm64", ("python3",))

    root = cached(f"debian-{SUITE}-arm64", build) / "root"
    # qemu-user serves the emulated program the host's x86 /proc/cpuinfo, which ARM CPU-feature
    # probes (the cpuinfo library inside LiteRT/XNNPACK) cannot parse and crash on. With -L ROOT
    # qemu opens ROOT/proc/cpuinfo first: give it what a Raspberry Pi 4 (Cortex-A72) reports.
    _give_cpuinfo(root, PI4_CPUINFO)
    return root


def _unpack_foreign(root: Path, arch: str, packages: tuple[str, ...]) -> list[Path]:
    """``debootstrap --foreign`` of ``packages`` for ``arch``, every fetched .deb unpacked into
    ``root`` (the first stage unpacks only the required ones; no second stage, which needs binfmt).
    Returns the .debs."""
    _run(["debootstrap", "--foreign", f"--arch={arch}", "--variant=minbase", f"--include={','.join(packages)}",
          SUITE, str(root), debian_mirror()], stdout=subprocess.DEVNULL)
    debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    return debs


def _give_cpuinfo(root: Path, text: str) -> None:
    """``ROOT/proc/cpuinfo``, which qemu-user (``-L ROOT``) shows the guest instead of the host's."""
    cpuinfo = root / "proc/cpuinfo"
    if not cpuinfo.is_file() or cpuinfo.read_text() != text:
        cpuinfo.parent.mkdir(exist_ok=True)
        cpuinfo.write_text(text)


PI4_CPUINFO = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
    "CPU revision\t: 3\n\n"
    for n in range(4)
) + "Hardware\t: BCM2835\nRevision\t: d03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


# The Debian packages of the armhf root besides python3: the runtime's compiled dependencies come
# from Debian (numpy 1.24, Pillow 9.4, OpenCV 4.6), as on 32-bit Raspberry Pi OS with apt.
ARMHF_DEBIAN_PACKAGES = ("python3", "python3-numpy", "python3-pil", "python3-opencv")


def debian_root_armhf(packages: tuple[str, ...] = ARMHF_DEBIAN_PACKAGES) -> Path:
    """Debian 12's armhf python3.11 with ``packages`` (and their dependencies) unpacked, no second stage."""

    def build(tmp: Path) -> None:
        root = tmp / "root"
        debs = _unpack_foreign(root, "armhf", packages)
        _link_alternatives(root, "arm-linux-gnueabihf")
        # The .debs are not needed any more once unpacked (python3-opencv pulls hundreds of MB).
        for deb in debs:
            deb.unlink()

    root = cached(f"debian-{SUITE}-armhf-{_key(sorted(packages))}", build) / "root"
    # As for arm64: qemu-user would show the guest the host's x86 cpuinfo, which profile detection
    # (and any native CPU probe) reads. Give it what a Raspberry Pi 4 on a 32-bit kernel reports.
    _give_cpuinfo(root, PI4_ARMV7_CPUINFO)
    return root


def _link_alternatives(root: Path, triplet: str) -> None:
    """The links update-alternatives would make for BLAS and LAPACK (numpy's libblas.so.3).

    They are made by the packages' postinst scripts, which the unrun second stage never calls:
    point ``libblas.so.3``/``liblapack.so.3`` at the implementation unpacked (the reference one).
    """
    libdir = root / "usr/lib" / triplet
    for impl in ("blas", "lapack"):
        for lib in sorted((libdir / impl).glob("lib*.so.3")):
            link = libdir / lib.name
            if not link.exists():
                link.symlink_to(f"{impl}/{lib.name}")


PI4_ARMV7_CPUINFO = "".join(
    f"processor\t: {n}\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\n"
    "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n"
    "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
    "CPU revision\t: 3\n\n"
    for n in range(4)
) + "Hardware\t: BCM2711\nRevision\t: c03114\nSerial\t\t: 10000000deadbeef\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


def project_requirements(*extras: str) -> list[str]:
    """The distribution's requirements (core plus ``extras``), read from pyproject.toml."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += [r for r in project["optional-dependencies"][extra] if not r.startswith("edge-runtime")]
    return sorted(set(reqs))


def _key(reqs: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]


def wheelhouse(reqs: list[str]) -> Path:
    """Wheels of ``reqs`` and their dependencies for this machine's Python (pip download, once)."""

    def build(tmp: Path) -> None:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
              "--only-binary=:all:", "-d", str(tmp / "wheels"), *reqs])

    return cached(f"wheelhouse-cp311-x86_64-{_key(reqs)}", build) / "wheels"


AARCH64_PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{v}_aarch64" for v in range(17, 37))]


def aarch64_site(reqs: list[str]) -> Path:
    """A site-packages directory with the aarch64 CPython 3.11 wheels of ``reqs`` (pip install --target)."""

    def build(tmp: Path) -> None:
        platforms = [arg for p in AARCH64_PLATFORMS for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--target", str(tmp / "site"), *platforms, "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311", "--only-binary=:all:", *reqs])

    return cached(f"site-cp311-aarch64-{_key(reqs)}", build) / "site"


ARMV7L_PLATFORMS = [*(f"manylinux_2_{v}_armv7l" for v in range(17, 37)), "manylinux2014_armv7l"]


def armv7l_site(reqs: list[str]) -> Path:
    """A site-packages directory with the armv7l CPython 3.11 wheels of exactly ``reqs``.

    Dependencies are not resolved (``--no-deps``): list them all. The compiled libraries a 32-bit
    Pi takes from apt (numpy, Pillow, OpenCV) must come from the Debian root instead, so this
    refuses to build a site that holds any of them.
    """

    def build(tmp: Path) -> None:
        platforms = [arg for p in ARMV7L_PLATFORMS for arg in ("--platform", p)]
        site = tmp / "site"
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
              "--target", str(site), *platforms, "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311", "--only-binary=:all:", *reqs])
        clash = sorted(p.name for p in site.iterdir() if p.name.lower().startswith(("numpy", "pil", "cv2", "opencv")))
        if clash:
            raise RuntimeError(f"the armv7l site must not hold {clash}: they come from Debian's armhf packages")

    return cached(f"site-cp311-armv7l-{_key(sorted(reqs))}", build) / "site"
