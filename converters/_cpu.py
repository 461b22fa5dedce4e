"""What this CPU can do, for quantization choices that depend on it and for the report."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["cpu_flags", "cpu_name", "has_vnni", "is_x86"]


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith(("model name", "Model", "Hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def has_vnni() -> bool:
    """AVX-512 VNNI or AVX-VNNI: the x86 instructions that make onnxruntime's U8S8 kernels exact.

    Without them onnxruntime uses vpmaddubsw, whose 16-bit intermediate sums can saturate with
    8-bit weights; 7-bit weights (``reduce_range``) avoid that (onnxruntime quantization docs).
    """
    flags = cpu_flags()
    return bool({"avx512_vnni", "avx512vnni", "avx_vnni", "avxvnni"} & flags)
