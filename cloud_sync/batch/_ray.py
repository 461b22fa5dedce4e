"""The Ray engine: Ray Data over a pool of actors, each holding one loaded model.

The driver turns the pending inputs into a dataset of keys (``ray.data.from_items``, one block per
batch, at least one per worker: ``plan_blocks``) and maps it with ``map_batches(_RayPredictor)`` on a
fixed pool of ``workers`` actors with ``threads`` CPUs each: each actor loads (and verifies) the
bundle once, and each block of keys comes back as an Arrow table of rows, read, decoded and predicted
on the actor (no pixels travel through the object store). The driver iterates the
output as it streams (``iter_batches``) and hands each block to the output, so rows reach the
database while the job runs and a killed job loses at most the blocks in flight.

Without ``address`` a Ray instance is started on this machine (and stopped at the end); with it
(or in a Ray session the caller opened) the job runs on that cluster, and the bundle travels to the
actors as bytes (the workers need not see the driver's files). Inputs are read where the actors
run: S3 and URLs work anywhere, local paths only where the workers see the same files (this machine,
or a shared filesystem).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from ._engine import EngineOptions
from ._errors import BatchError
from ._inputs import InputItem
from ._predictor import ROW_COLUMNS, BatchPredictor, PredictorSpec, Row

__all__ = ["RayEngine", "plan_blocks"]

log = logging.getLogger(__name__)


def _row_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("source_key", pa.string()), ("model_name", pa.string()), ("model_version", pa.int64()),
        ("ts", pa.string()), ("backend", pa.string()), ("top_label", pa.string()),
        ("top_score", pa.float64()), ("detections", pa.string()), ("values", pa.string()),
        ("latency_ms", pa.float64()), ("error", pa.string()), ("record", pa.string()),
    ])


def plan_blocks(n: int, batch_size: int, workers: int) -> int:
    """How many blocks (Ray Data tasks, one predictor call each) ``n`` inputs are cut into: blocks of
    at most ``batch_size`` rows, and at least one per worker when there are enough inputs, so that a
    small job still keeps every actor busy (Ray Data warns "the operator only received 1 input(s)"
    and leaves actors idle otherwise)."""
    return max(1, -(-n // batch_size), min(n, workers))


class _RayPredictor:
    """The actor class: one model per actor, loaded in the constructor."""

    def __init__(self, spec: PredictorSpec) -> None:
        self.predictor = BatchPredictor(spec)
        self.schema = _row_schema()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        items = [InputItem(str(k), int(f)) for k, f in
                 zip(batch.column("key").to_pylist(), batch.column("frame").to_pylist(), strict=True)]
        rows = self.predictor.predict_items(items)
        return pa.Table.from_pylist(list(rows), schema=self.schema)


class RayEngine:
    name = "ray"

    def __init__(self, options: EngineOptions) -> None:
        try:
            import ray
        except ImportError as exc:
            raise BatchError("--engine ray needs Ray Data: pip install 'edge-runtime[batch]'") from exc
        self.options = options
        self._ray = ray
        self._started = False

    def _init(self, threads: int) -> None:
        ray = self._ray
        if ray.is_initialized():
            return  # the caller's session (tests, a notebook): use it, leave it running
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        try:
            if self.options.address is not None:
                ray.init(address=self.options.address, **kwargs)
            else:
                cpus = self.options.num_cpus or self.options.workers * threads
                # "local": always a new instance of our own, never a cluster that `ray start` left
                # in /tmp/ray/ray_current_cluster (that one is used only when named with --address)
                ray.init(address="local", num_cpus=cpus, object_store_memory=self.options.object_store_memory,
                         **kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray has no one base
            where = self.options.address or "this machine"
            raise BatchError(f"cannot start Ray on {where}: {exc}") from exc
        self._started = True

    def run(self, items: Sequence[InputItem], spec: PredictorSpec) -> Iterator[list[Row]]:
        if spec.threads is None:
            # what each actor reserves is what its model uses: one CPU, one inference thread
            spec = replace(spec, threads=1)
        threads = spec.threads or 1
        self._init(threads)
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        if not (self._started and self.options.address is None):
            # A cluster (named, or a session the caller opened) may run actors on other machines:
            # the bundle travels with them as bytes. Only a Ray of our own shares our files for sure.
            spec = spec.packed()
        blocks = plan_blocks(len(items), self.options.batch_size, self.options.workers)
        # Only keys travel: each actor reads, decodes, preprocesses and infers its own inputs.
        ds: Any = self._ray.data.from_items([{"key": it.key, "frame": it.frame} for it in items],
                                       override_num_blocks=blocks)
        # A fixed pool of actors (what `concurrency=N` meant before Ray 2.51), each with `threads`
        # CPUs reserved for its model's inference threads; never more actors than blocks (an actor
        # with nothing to do still costs a process, imports and a model load at start-up). Two
        # blocks in flight per actor: the next one is already there when the current one is done.
        pool = ActorPoolStrategy(size=min(self.options.workers, blocks), max_tasks_in_flight_per_actor=2)
        # batch_size=None: one call (one task) per block, as the blocks were cut. from_items splits
        # evenly, so a block may be a row short of batch_size, and with batch_size=N Ray Data would
        # bundle two of them into one task of ~2N rows cut into two calls.
        ds = ds.map_batches(_RayPredictor, fn_constructor_kwargs={"spec": spec}, batch_size=None,
                            batch_format="pyarrow", compute=pool, num_cpus=threads)
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows = table.select(list(ROW_COLUMNS)).to_pylist()
                if rows:
                    yield rows
        except Exception as exc:
            if isinstance(exc, BatchError):
                raise
            msg = str(exc).strip().splitlines()
            raise BatchError(f"the Ray job failed: {type(exc).__name__}: {msg[-1] if msg else ''}") from exc

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

