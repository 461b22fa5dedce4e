"""Online inference: models loaded from the registry, run through the same runtime as a device
(``edge_runtime.Model``), with requests of concurrent callers batched together.

Dynamic batching: each loaded model has a queue and ``inference_workers`` backend instances.
For a model whose batch dimension is dynamic, a worker takes the first waiting request, gathers
more for at most ``max_batch_wait_ms`` (or until ``max_batch_size``) and runs them as one
concatenated backend call, then splits the answers back to their callers.

A model with a fixed batch of one (most TFLite models; XNNPACK cannot even resize MobileNet V2,
whose reshape is fixed) gains nothing from grouping: its items would run back to back anyway,
and holding early callers until the whole group is done made the service slower (request
parsing and inference stop overlapping). Such models get each request as soon as a worker is
free; the queue still bounds how many run at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime import BundleError, EdgeError, Model, PublicKey, open_bundle, sha256_file
from edge_runtime.backends import Backend, BackendOptions, load_backend

from ._errors import ServiceError, StorageError, UnprocessableError
from ._metrics import MetricsRegistry
from ._registry import Registry, VersionRecord
from ._settings import ServiceSettings
from ._storage import BlobStore

__all__ = ["Batcher", "LoadedModel", "ModelManager"]

log = logging.getLogger(__name__)

Tensors = list[np.ndarray]


@dataclass
class _Item:
    tensors: Tensors
    future: asyncio.Future[Tensors]
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Gathers requests of concurrent callers into batches for a set of backend instances."""

    def __init__(self, name: str, backends: Sequence[Backend], *, dynamic_batch: bool, max_batch: int,
                 max_wait_s: float, metrics: MetricsRegistry) -> None:
        self.name = name
        self._backends = list(backends)
        self._dynamic = dynamic_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._metrics = metrics
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self._backends),
                                                           thread_name_prefix=f"infer-{name}")
        self._tasks = [asyncio.get_running_loop().create_task(self._worker(be)) for be in self._backends]

    async def submit(self, tensors: Tensors) -> Tensors:
        fut: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(tensors, fut))
        return await fut

    async def _gather(self, first: _Item) -> list[_Item]:
        batch = [first]
        if self._max_batch <= 1:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        while len(batch) < self._max_batch:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            if nxt is None:  # closing: put the sentinel back for the loop to see
                self._queue.put_nowait(None)
                break
            batch.append(nxt)
        return batch

    async def _worker(self, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is None:
                self._queue.put_nowait(None)
                return
            batch = await self._gather(first)
            now = time.perf_counter()
            for it in batch:
                self._metrics.queue_wait.observe(now - it.queued_at)
            self._metrics.batch_size.observe(len(batch), model=self.name)
            try:
                results = await loop.run_in_executor(self._pool, self._run, backend, [it.tensors for it in batch])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - not swallowed: every caller of the batch gets it (their
                # request reports it); the worker itself must live on to serve the next batch
                results = [exc] * len(batch)
            for it, res in zip(batch, results, strict=True):
                if it.future.done():  # the caller went away
                    continue
                if isinstance(res, BaseException):
                    it.future.set_exception(res)
                else:
                    it.future.set_result(res)

    def _run(self, backend: Backend, items: list[Tensors]) -> list[Tensors | BaseException]:
        if self._dynamic and len(items) > 1:
            try:
                return self._run_concat(backend, items)
            except EdgeError as exc:
                log.debug("batched call failed (%s); running %d items one by one", exc, len(items))
        out: list[Tensors | BaseException] = []
        for tensors in items:
            try:
                out.append([np.array(o, copy=True) for o in backend.run(tensors)])
            except EdgeError as exc:
                out.append(exc)
        return out

    @staticmethod
    def _run_concat(backend: Backend, items: list[Tensors]) -> list[Tensors | BaseException]:
        sizes = [int(t[0].shape[0]) for t in items]
        joined = [np.concatenate([t[i] for t in items], axis=0) for i in range(len(items[0]))]
        outs = backend.run(joined)
        bounds = np.cumsum([0, *sizes])
        return [[np.array(o[bounds[k]:bounds[k + 1]], copy=True) for o in outs] for k in range(len(items))]

    async def close(self) -> None:
        self._queue.put_nowait(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=True)


@dataclass
class LoadedModel:
    record: VersionRecord
    model: Model
    batcher: Batcher
    workdir: Path

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def version(self) -> int:
        return self.record.version

    async def infer(self, tensors: Tensors) -> Tensors:
        return await self.batcher.submit(tensors)


class ModelManager:
    """Loads registry versions for inference on demand and keeps the last few loaded (LRU).

    Only derived state lives here (a cache of what the registry and the object store hold), so
    every replica can serve every model.
    """

    def __init__(self, registry: Registry, store: BlobStore, settings: ServiceSettings,
                 trusted_keys: list[PublicKey], metrics: MetricsRegistry) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.trusted_keys = trusted_keys
        self.metrics = metrics
        self._loaded: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._resolved: dict[str, tuple[float, int]] = {}
        self._cache_dir = settings.resolved_cache_dir

    async def resolve(self, name: str, version: int | None) -> VersionRecord:
        """The registry version to serve (explicit, else the default channel's, else the latest).
        A replica trusts its answer for ``resolve_cache_seconds`` to keep the database off the
        hot path."""
        if version is None:
            hit = self._resolved.get(name)
            if hit is not None and hit[0] > time.monotonic():
                version = hit[1]
        if version is not None:
            for (n, v), lm in self._loaded.items():
                if n == name and v == version:
                    return lm.record
        from starlette.concurrency import run_in_threadpool

        rec: VersionRecord = await run_in_threadpool(
            self.registry.resolve, name, version=version,
            channel=self.settings.default_channel if version is None else None)
        if version is None:
            self._resolved[name] = (time.monotonic() + self.settings.resolve_cache_seconds, rec.version)
        return rec

    async def get(self, name: str, version: int | None = None) -> LoadedModel:
        rec = await self.resolve(name, version)
        key = (rec.name, rec.version)
        lm = self._loaded.get(key)
        if lm is not None:
            self._loaded.move_to_end(key)
            return lm
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            lm = self._loaded.get(key)
            if lm is not None:
                return lm
            from starlette.concurrency import run_in_threadpool

            model, backends, workdir = await run_in_threadpool(self._load, rec)
            first = model.manifest.inputs[0].shape
            dynamic = bool(first) and first[0] == -1
            s = self.settings
            batcher = Batcher(f"{rec.name}:{rec.version}", backends, dynamic_batch=dynamic,
                              max_batch=s.max_batch_size if (s.batching and dynamic) else 1,
                              max_wait_s=s.max_batch_wait_ms / 1000.0, metrics=self.metrics)
            lm = LoadedModel(rec, model, batcher, workdir)
            self._loaded[key] = lm
            self.metrics.loaded_models.set(len(self._loaded))
            while len(self._loaded) > s.max_loaded_models:
                _, old = self._loaded.popitem(last=False)
                await self._unload(old)
            return lm

    def _load(self, rec: VersionRecord) -> tuple[Model, list[Backend], Path]:
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{rec.name}-v{rec.version}-", dir=self._cache_dir))
        try:
            archive = workdir / "bundle.tar.gz"
            self.store.get_to_file(rec.storage_key, archive, rec.size)
            if sha256_file(archive) != rec.sha256:
                raise StorageError(f"{rec.name} v{rec.version}: stored bundle does not match its sha256",
                                   code="blob_corrupt")
            # Verified again here: the object store is not trusted more than the uploader was.
            bundle = open_bundle(archive, pubkey=self.trusted_keys or None, extract_to=workdir / "bundle")
            archive.unlink()
            s = self.settings
            threads = s.inference_threads or max(1, (os.cpu_count() or 1) // s.inference_workers)
            model = Model.load(bundle, threads=threads)
            backends = [model.backend]
            opts = BackendOptions(threads=threads, inputs=tuple(bundle.manifest.inputs),
                                  outputs=tuple(bundle.manifest.outputs))
            for _ in range(self.settings.inference_workers - 1):
                backends.append(load_backend(bundle.model_path, bundle.manifest.format, opts,
                                             backend=model.backend_name))
        except ServiceError:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        except BundleError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise UnprocessableError(f"{rec.name} v{rec.version} cannot be served: {exc}",
                                     code="model_unloadable") from exc
        except EdgeError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise UnprocessableError(f"{rec.name} v{rec.version} cannot be loaded for inference: {exc}",
                                     code="model_unloadable") from exc
        log.info("loaded %s v%d on %s (%d worker(s), %d thread(s) each)", rec.name, rec.version,
                 model.backend_name, len(backends), threads)
        return model, backends, workdir

    async def _unload(self, lm: LoadedModel) -> None:
        await lm.batcher.close()
        with contextlib.suppress(EdgeError, OSError):
            lm.model.close()
        shutil.rmtree(lm.workdir, ignore_errors=True)
        self.metrics.loaded_models.set(len(self._loaded))
        log.info("unloaded %s v%d", lm.name, lm.version)

    def loaded(self) -> list[tuple[str, int]]:
        return list(self._loaded)

    async def close(self) -> None:
        while self._loaded:
            _, lm = self._loaded.popitem()
            await self._unload(lm)



