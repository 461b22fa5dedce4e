"""``run_batch``: list the inputs, skip the ones done, run an engine, stream rows into the output.

The driver does the bookkeeping, the engine does the work:
1. the bundle is opened and verified here first (a tampered bundle stops the job before any
   worker starts), which also gives the model name and version the rows are keyed by;
2. the source is listed and the keys already in the output for that model version are dropped
   before anything is scheduled;
3. the engine's rows are written as they arrive, in transactions of ``flush_rows`` rows or
   ``flush_seconds``, whichever comes first, so a killed job keeps all it committed and a rerun
   does only the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime import load_public_key, open_bundle

from ._engine import EngineOptions, open_engine
from ._errors import BatchError
from ._inputs import list_inputs
from ._output import open_output
from ._predictor import PredictorSpec, Row

__all__ = ["BatchSummary", "run_batch"]

log = logging.getLogger(__name__)

#: called with (rows done so far in this run, rows this run will do)
Progress = Callable[[int, int], None]


@dataclass
class BatchSummary:
    engine: str
    workers: int
    model: dict[str, Any]
    source: str
    output: str
    inputs: int
    already_done: int
    processed: int = 0
    written: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    #: seconds from the start until the first rows came back: listing, skipping, starting the
    #: engine (Ray, its actors) and loading the model; None when nothing ran
    startup_s: float | None = None
    #: rows that came back with the first ones (not counted in the steady rate)
    first_rows: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def steady_rows_per_s(self) -> float:
        """Rows per second once the first rows were back: the throughput without the start-up."""
        if self.startup_s is None or self.elapsed_s <= self.startup_s:
            return 0.0
        return (self.processed - self.first_rows) / (self.elapsed_s - self.startup_s)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        d["startup_s"] = round(self.startup_s, 3) if self.startup_s is not None else None
        d["rows_per_s"] = round(self.rows_per_s, 2)
        d["steady_rows_per_s"] = round(self.steady_rows_per_s, 2)
        return d


def run_batch(
    bundle: str | Path,
    source: str,
    output: str,
    *,
    engine: str = "local",
    options: EngineOptions | None = None,
    pubkeys: Sequence[str | Path] = (),
    threads: int | None = None,
    backend: str | None = None,
    s3_endpoint_url: str | None = None,
    recursive: bool = False,
    flush_rows: int = 256,
    flush_seconds: float = 1.0,
    progress: Progress | None = None,
) -> BatchSummary:
    """Run ``bundle`` over every input of ``source`` not yet in ``output``; see the module doc."""
    options = options or EngineOptions()
    pems = tuple(Path(p).read_bytes() for p in pubkeys)
    keys = [load_public_key(p) for p in pubkeys] or None
    b = open_bundle(bundle, pubkey=keys)  # verified once here: one clear error, no worker started
    name, version = b.manifest.name, b.manifest.version
    b.close()
    items = list_inputs(source, s3_endpoint_url=s3_endpoint_url, recursive=recursive)
    out = open_output(output)
    summary = BatchSummary(engine=engine, workers=options.workers, model={"name": name, "version": version},
                           source=source, output=out.description, inputs=len(items), already_done=0)
    started = time.perf_counter()
    eng = None
    try:
        done = out.done_keys(name, version)
        pending = [it for it in items if it.key not in done]
        summary.already_done = len(items) - len(pending)
        if summary.already_done:
            log.info("%d of %d input(s) already in %s for %s v%d", summary.already_done, len(items),
                     out.description, name, version)
        if progress is not None:
            progress(0, len(pending))
        if pending:
            spec = PredictorSpec(bundle=str(bundle), pubkeys_pem=pems, threads=threads, backend=backend,
                                 s3_endpoint_url=s3_endpoint_url)
            eng = open_engine(engine, options)
            buffer: list[Row] = []
            last_flush = time.monotonic()

            def flush() -> None:
                nonlocal last_flush
                if buffer:
                    summary.written += out.write(buffer)
                    buffer.clear()
                last_flush = time.monotonic()

            for rows in eng.run(pending, spec):
                if summary.startup_s is None:
                    summary.startup_s = time.perf_counter() - started
                    summary.first_rows = len(rows)
                buffer.extend(rows)
                summary.processed += len(rows)
                for r in rows:
                    if r["error"] is not None:
                        summary.errors += 1
                        if len(summary.error_samples) < 5:
                            summary.error_samples.append(r["error"])
                if len(buffer) >= flush_rows or time.monotonic() - last_flush >= flush_seconds:
                    flush()
                if progress is not None:
                    progress(summary.processed, len(pending))
            flush()
            if summary.processed != len(pending):
                raise BatchError(f"the {engine} engine returned {summary.processed} row(s) for "
                                 f"{len(pending)} input(s)")
    finally:
        summary.elapsed_s = time.perf_counter() - started
        try:
            out.close()
        finally:
            if eng is not None:
                eng.close()
    return summary
