"""The cloud service as a subprocess under ``prlimit --as`` (a cap on its address space), so a test
can show that hostile input is refused with a 4xx instead of driving the service out of memory,
and that the same process keeps serving afterwards."""

from __future__ import annotations

from pathlib import Path

from tests.support.service import CloudService

__all__ = ["CappedService"]


class CappedService(CloudService):
    """``CloudService`` started as ``prlimit --as=CAP python -m uvicorn ...``.

    glibc gives each thread its own 64 MiB malloc arena of address space; ``MALLOC_ARENA_MAX=2``
    keeps the cap about memory actually used rather than reserved."""

    description = "the capped cloud service"

    def __init__(self, data_dir: Path, trusted_keys: list[Path], *, cap_bytes: int,
                 extra_env: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, trusted_keys)
        self.cap_bytes = cap_bytes
        self.env["MALLOC_ARENA_MAX"] = "2"
        self.env.update(extra_env or {})

    def command(self) -> list[str]:
        return ["prlimit", f"--as={self.cap_bytes}", "--", *super().command()]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def vm_peak_bytes(self) -> int:
        """The process's peak address space (VmPeak), for the test's message."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
        return 0
