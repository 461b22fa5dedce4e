"""``edge profiles``: list, show and detect device profiles.

Registered lazily by ``edge_cli``; errors are raised as ProfileError, which the top-level
``edge`` command prints as one ``error: ...`` line with exit code 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from device_profiles import Detection, Profile, detect, list_profiles, resolve_profile

__all__ = ["profiles_group"]


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _memory(profile: Profile) -> str:
    if len(profile.memory_options_mb) > 1:
        return "-".join(_mb(m) for m in (min(profile.memory_options_mb), max(profile.memory_options_mb)))
    return _mb(profile.memory_mb)


def _mb(mb: int) -> str:
    return f"{mb // 1024} GB" if mb >= 1024 and mb % 1024 == 0 else f"{mb} MB"


@click.group("profiles")
def profiles_group() -> None:
    """Device profiles: what a device is and how models should run on it.

    A profile gives the CPU, memory, OS and Python notes of a kind of device, the backends in
    order of preference, inference threads, the quantization to build models with, the camera
    kind, a latency budget and a memory ceiling. The runtime uses the detected profile unless
    --profile (or EDGE_PROFILE) names one.
    """


@profiles_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of full profiles.")
def list_cmd(as_json: bool) -> None:
    """List the shipped profiles, one line each."""
    profiles = list_profiles()
    if as_json:
        _echo_json([p.to_dict(json=True) for p in profiles])
        return
    _table(
        ("NAME", "ARCH", "CORES", "MEMORY", "BACKENDS", "THREADS", "QUANT", "CAMERA", "BUDGET", "TITLE"),
        [
            (
                p.name,
                p.arch,
                str(p.cores),
                _memory(p),
                ",".join(p.backends),
                str(p.threads),
                p.quantization,
                p.camera,
                f"{p.latency_budget_ms:g} ms",
                p.title,
            )
            for p in profiles
        ],
    )


@profiles_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as a JSON object.")
def show_cmd(name: str, as_json: bool) -> None:
    """Show one profile in full.

    NAME is a shipped profile (see `edge profiles list`) or the path of a .toml file, which is
    then validated: a custom board's profile can be checked this way before it is deployed.
    """
    profile = resolve_profile(name)
    if as_json:
        _echo_json(profile.to_dict(json=True))
        return
    _print_profile(profile)


@profiles_group.command("detect")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Read proc/cpuinfo, proc/meminfo, proc/device-tree/model (and system/build.prop) below this "
    "directory, e.g. a copy of another machine's files. This machine's platform and environment "
    "are then ignored.",
)
@click.option(
    "--machine",
    help="Architecture of the Python userland instead of platform.machine() (aarch64, armv7l, x86_64; "
    "arm64 and AMD64 are understood).",
)
@click.option("--system", help="Operating system instead of platform.system() (Linux, Android, Darwin).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the profile, detected memory and evidence as JSON."
)
def detect_cmd(root: Path, machine: str | None, system: str | None, as_json: bool) -> None:
    """Detect this machine's profile and show the evidence.

    Reads the device-tree model, /proc/cpuinfo, /proc/meminfo, the platform and the Android
    markers, prints the chosen profile, why it was chosen, the detected memory and the memory
    the model may use. With --root, reads a copy of another machine's files instead.
    """
    detection = detect(root, machine=machine, system=system)
    if as_json:
        _echo_json(detection.to_dict())
        return
    _print_detection(detection)


def _print_profile(p: Profile) -> None:
    click.echo(f"{p.name}: {p.title}")
    if p.description:
        click.echo(f"  {p.description}")
    rows: list[tuple[str, str]] = [
        ("arch", p.arch),
        ("cpu", f"{p.cpu}" + (f" @ {p.cpu_mhz} MHz" if p.cpu_mhz else "")),
        ("cores", str(p.cores)),
        (
            "memory",
            _mb(p.memory_mb)
            + (f" (sold with {', '.join(map(_mb, p.memory_options_mb))})" if p.memory_options_mb else ""),
        ),
        ("os", p.os),
        ("system python", p.system_python or "varies"),
        ("backends", ", ".join(p.backends)),
        ("threads", str(p.threads)),
        ("quantization", p.quantization),
        ("camera", p.camera),
        ("latency budget", f"{p.latency_budget_ms:g} ms"),
        ("memory ceiling", _mb(p.memory_ceiling_mb)),
    ]
    if p.detect is None:
        rows.append(("detected by", "never (use it by name)"))
    elif p.detect.fallback:
        rows.append(("detected by", f"fallback for {p.arch} on {', '.join(p.detect.systems)}"))
    elif p.detect.android:
        rows.append(("detected by", f"Android markers on {p.arch}"))
    else:
        rows.append(("detected by", f"board model on {p.arch}: " + "; ".join(p.detect.models)))
    width = max(len(k) for k, _ in rows)
    click.echo("")
    for key, value in rows:
        click.echo(f"  {key.ljust(width)}  {value}")
    if p.notes:
        click.echo("")
        click.echo("notes:")
        for note in p.notes:
            click.echo(f"  - {note}")


def _print_detection(d: Detection) -> None:
    click.echo(f"profile: {d.profile.name} ({d.profile.title})")
    click.echo(f"why:     {d.evidence.get('matched', '')}")
    if d.memory_mb is not None:
        click.echo(
            f"memory:  {d.memory_mb} MB detected; plan for at most {d.memory_ceiling_mb} MB "
            f"(profile ceiling {d.profile.memory_ceiling_mb} MB)"
        )
    click.echo(
        f"run:     backends {', '.join(d.profile.backends)}; {d.profile.threads} threads; "
        f"quantization {d.profile.quantization}"
    )
    click.echo("")
    click.echo("evidence:")
    items = [(k, v) for k, v in d.evidence.items() if k != "matched"]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        click.echo(f"  {key.ljust(width)}  {value}")
