"""The cloud service as a subprocess under ``prlimit --as`` (a cap on its address space), so a test
can show that hostile input is refused with a 4xx instead of driving the service out of memory,
and that the same process keeps serving afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.net import wait_for
from tests.support.service import CloudService

__all__ = ["CappedService"]


class CappedService(CloudService):
    """``CloudService`` started as ``prlimit --as=CAP python -m uvicorn ...``.

    glibc gives each thread its own 64 MiB malloc arena of address space; ``MALLOC_ARENA_MAX=2``
    keeps the cap about memory actually used rather than reserved."""

    def __init__(self, data_dir: Path, trusted_keys: list[Path], *, cap_bytes: int,
                 extra_env: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, trusted_keys)
        self.cap_bytes = cap_bytes
        self.env["MALLOC_ARENA_MAX"] = "2"
        self.env.update(extra_env or {})
        self.log_path = data_dir.parent / f"service-{self.port}.log"

    def start(self) -> CappedService:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["prlimit", f"--as={self.cap_bytes}", "--",
             sys.executable, "-m", "uvicorn", "--factory", "cloud_sync.service:create_app_from_env",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir.parent)
        log.close()
        self.starts += 1
        wait_for(self._live, 60, f"the capped cloud service on port {self.port}", interval=0.05)
        return self

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
