"""Sources, inference and sinks overlapping in threads with bounded queues.

- File sources: a pool of workers decodes and preprocesses the next frames while the current one
  is inferred; results keep the source order and nothing is dropped.
- Live sources: the capture thread keeps only the newest frame (see ``LatestFrame``); the model
  always gets the most recent picture.
- Sinks run on their own thread behind a bounded queue, so a slow disk never stalls inference
  for long, and a full queue applies back-pressure rather than growing without bound.
- The model can be swapped between two frames (``swap_model``): the update path of the agent.
- Cores are used, not over-subscribed: over many image files, when nobody fixed the inference
  threads, each core gets a worker process that runs the whole model on one thread (decode,
  preprocess, infer, postprocess: ``_model_workers``), and this process only orders and writes the
  records. A video is decoded on threads beside the model's own. JPEGs are decoded at reduced size
  and large video frames shrunk by an integer factor first when the model input is small (not for
  detection).
- Tabular rows from a file are inferred in batches when the model takes one; each record is the
  same whatever batch its row fell in.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import EdgeError, SinkError
from ._imaging import ImagePreprocessor, decode_image
from ._manifest import Preprocess, TensorSpec
from ._model import Model, Prediction, _image_size, _latency
from ._record import Record, error_record, make_record
from ._sinks import Sink
from .sources import Frame, ImageFilesSource, Source, TabularSource, VideoFileSource

__all__ = ["Pipeline", "PipelineStats", "Predictor"]

log = logging.getLogger(__name__)

#: turns (model, frame data, local prediction) into a record; the hybrid router plugs in here
Predictor = Callable[[Model, Frame, list[np.ndarray]], Record]




#: below this many files, starting decode processes costs more than it gains
_PROCESS_MIN_FILES = 64

# Decoding image files in worker processes: Pillow's PNG/JPEG readers run partly in Python and
# hold the GIL, and measured here that slows the inference thread of the same process by 20-40 %
# (two separate processes do not slow each other). The worker rebuilds the preprocessor from the
# manifest, so its tensors are exactly the ones the main process would make.
_WORKER_PRE: ImagePreprocessor | None = None
_WORKER_REDUCE = False

#: rows of a file source inferred in one call when the model takes a batch (a dynamic first axis)
_ROW_BATCH = 256


def _init_decoder(pre_json: str, spec_json: str, reduce: bool = False) -> None:
    global _WORKER_PRE, _WORKER_REDUCE
    _WORKER_PRE = ImagePreprocessor(Preprocess.from_json(pre_json),
                                    TensorSpec.from_json(spec_json))
    _WORKER_REDUCE = reduce


def _decode_file(path: str) -> tuple[np.ndarray | None, str | None, float, tuple[int, int] | None]:
    assert _WORKER_PRE is not None
    t0 = time.perf_counter()
    try:
        image, size = decode_image(path, reduce_for=_WORKER_PRE if _WORKER_REDUCE else None)
        x = _WORKER_PRE(image)
    except EdgeError as exc:
        return None, str(exc), 0.0, None
    # the image's size goes back with the tensor: detection maps its boxes back onto the image
    return x, None, (time.perf_counter() - t0) * 1000, size


# Workers that run the whole model, one inference thread each (see ``Pipeline._model_workers``).
_WORKER_MODEL: Model | None = None


def _init_model_worker(model: Model, reduce: bool) -> None:
    """In a forked worker: its own backend for ``model``'s bundle (already opened and verified by
    the parent), on one thread. The parent's backend, inherited by fork, is never used or closed
    here: an interpreter's thread pool does not survive fork (its threads are not copied)."""
    global _WORKER_MODEL, _WORKER_REDUCE
    _WORKER_MODEL = Model.load(model.bundle, backend=model.backend_name, threads=1)
    _WORKER_REDUCE = reduce


@dataclass
class _Predicted:
    """What a model worker sends back for one file: the prediction (its latency_ms set) or the
    error, and the image's size in the file."""

    pred: Prediction | None
    error: str | None
    size: tuple[int, int] | None


def _predict_file(path: str) -> _Predicted:
    """Decode, preprocess, infer and postprocess one file in a model worker (see ``_init_model_worker``)."""
    m = _WORKER_MODEL
    assert m is not None
    t0 = time.perf_counter()
    try:
        image, size = decode_image(path, reduce_for=m.image_preprocessor if _WORKER_REDUCE else None)
        tensors = m.preprocess(image)
        t1 = time.perf_counter()
        outs = m.infer(tensors)
        t2 = time.perf_counter()
        pred = m.postprocess(outs, image_size=size)
    except EdgeError as exc:
        return _Predicted(None, str(exc), None)
    pred.latency_ms = _latency(t0, t1, t2, time.perf_counter())
    return _Predicted(pred, None, size)


def _predict_files(paths: list[str]) -> list[_Predicted]:
    return [_predict_file(p) for p in paths]


#: files a model worker gets per task (see ``_Chunked``)
_FILES_PER_TASK = 4


class _Chunked:
    """One future per file over a process pool that gets the files ``size`` at a time: a task is a
    pickled call, a result message and a wake-up of the pool's threads, ~200 us of CPU per file
    with one file a task and ~55 us with four (measured here, 2 workers); the files stay in order.
    ``flush`` sends what is buffered (the caller does before it waits on a buffered file)."""

    def __init__(self, pool: Executor, size: int) -> None:
        self.pool = pool
        self.size = size
        self._buf: list[tuple[str, Future[Any]]] = []

    def submit(self, path: str) -> Future[Any]:
        fut: Future[Any] = Future()
        self._buf.append((path, fut))
        if len(self._buf) >= self.size:
            self.flush()
        return fut

    def holds(self, fut: Future[Any]) -> bool:
        return any(f is fut for _, f in self._buf)

    def flush(self) -> None:
        """Send the buffered files as one task. BrokenExecutor (the workers died) is raised after
        every buffered future got it, so that the caller can fall back and ``_collect`` redoes them."""
        if not self._buf:
            return
        buf, self._buf = self._buf, []
        try:
            task = self.pool.submit(_predict_files, [p for p, _ in buf])
        except BrokenExecutor as exc:
            for _, f in buf:
                f.set_exception(exc)
            raise

        def done(t: Future[Any]) -> None:
            # on the pool's thread, while the run may be cancelling what it no longer waits for
            # (a reader that closed stdout, a stop): a future cancelled meanwhile keeps that state
            if t.cancelled():
                for _, f in buf:
                    f.cancel()
                return
            exc = t.exception()
            results = t.result() if exc is None else [None] * len(buf)
            for (_, f), res in zip(buf, results, strict=True):
                with contextlib.suppress(InvalidStateError):
                    if exc is not None:
                        f.set_exception(exc)
                    else:
                        f.set_result(res)

        task.add_done_callback(done)

    def cancel(self) -> None:
        for _, f in self._buf:
            f.cancel()
        self._buf = []


_MODEL_WORKERS_DIED = "model workers died; running the model in this process from here on"
_DECODE_WORKERS_DIED = "decode workers died; decoding in threads from here on"


def _threads_instead(pool: Executor, workers: int, why: str) -> ThreadPoolExecutor:
    """A thread pool to go on with when ``pool``'s worker processes died (BrokenExecutor): what it
    still held is cancelled (``_collect`` redoes those files here)."""
    log.warning(why)
    pool.shutdown(wait=False, cancel_futures=True)
    return ThreadPoolExecutor(workers, thread_name_prefix="prep")


def _cores() -> int:
    """Cores this process may run on (a cgroup or taskset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass
class PipelineStats:
    frames: int = 0
    errors: int = 0
    dropped: int = 0
    started: float = field(default_factory=time.perf_counter)
    elapsed_s: float = 0.0
    interrupted: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    #: worker processes that ran the whole model (0: inference ran in this process)
    model_workers: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"frames": self.frames, "errors": self.errors, "dropped": self.dropped,
                "elapsed_s": round(self.elapsed_s, 3), "fps": round(self.fps, 2),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 3)}


@dataclass
class _Prepared:
    frame: Frame
    model: Model | None = None
    tensors: list[np.ndarray] | None = None
    error: str | None = None
    preprocess_ms: float = 0.0
    #: already predicted by a model worker (with ``model``)
    pred: Prediction | None = None


class _SinkWriter:
    """Writes records on a thread of its own; a sink that raises is logged and dropped from the
    set, the others keep receiving."""

    def __init__(self, sinks: Sequence[Sink], maxsize: int = 256, *, inline: bool = False) -> None:
        self._sinks = list(sinks)
        self._q: queue.Queue[Record | list[Record] | None] = queue.Queue(maxsize=maxsize)
        #: ``inline``: written on the caller's thread (one frame: nothing to overlap with, and a
        #: thread hand-over costs a scheduler wake-up, milliseconds on a busy machine)
        self._t: threading.Thread | None = None
        if not inline:
            self._t = threading.Thread(target=self._loop, name="sinks", daemon=True)
            self._t.start()

    def put(self, rec: Record) -> None:
        if self._t is None:
            self._write(rec)
        else:
            self._q.put(rec)

    def put_many(self, recs: list[Record]) -> None:
        """Several records in one hand-over (rows: one queue operation per batch, not per row)."""
        if recs:
            if self._t is None:
                self._write(recs)
            else:
                self._q.put(recs)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            self._write(item)

    def _write(self, item: Record | list[Record]) -> None:
        for rec in item if isinstance(item, list) else (item,):
            for s in list(self._sinks):
                try:
                    s.write(rec)
                except (SinkError, OSError, ValueError) as exc:
                    log.error("sink %s failed and is disabled: %s", type(s).__name__, exc)
                    self._sinks.remove(s)

    def close(self) -> None:
        if self._t is not None:
            self._q.put(None)
            self._t.join()
        for s in self._sinks:
            try:
                s.close()
            except (SinkError, OSError) as exc:
                log.error("closing sink %s failed: %s", type(s).__name__, exc)


class Pipeline:
    def __init__(
        self,
        model: Model,
        source: Source,
        sinks: Sequence[Sink],
        *,
        limit: int | None = None,
        workers: int | None = None,
        prefetch: int | None = None,
        predictor: Predictor | None = None,
        on_record: Callable[[Record], None] | None = None,
        decode: str = "auto",
        on_frame: Callable[[Record, Any], None] | None = None,
    ) -> None:
        self._model = model
        self._next_model: Model | None = None
        self._swap_lock = threading.Lock()
        self.source = source
        self.sinks = list(sinks)
        self.limit = limit
        self.workers = workers or max(1, min(4, (os.cpu_count() or 2)))
        self.prefetch = prefetch or self.workers * 2
        self._workers_given = workers is not None
        self._prefetch_given = prefetch is not None
        if decode not in ("auto", "thread", "process"):
            raise ValueError(f"decode must be auto, thread or process, not {decode!r}")
        #: where image files are decoded: worker threads, or worker processes (auto: processes
        #: for long runs on a machine with a spare core)
        self.decode = decode
        self.predictor = predictor
        self.on_record = on_record
        #: gets each record with its frame's decoded pixels (the live preview); it must not block.
        #: Set, it keeps image decoding in this process (threads), where the pixels are.
        self.on_frame = on_frame
        self.stats = PipelineStats()
        self._stop = threading.Event()

    @property
    def model(self) -> Model:
        return self._model

    def swap_model(self, new: Model) -> None:
        """Use ``new`` from the next frame on; the frame being inferred finishes on the old model."""
        with self._swap_lock:
            self._next_model = new

    def stop(self) -> None:
        self._stop.set()

    def _take_swap(self) -> Model | None:
        with self._swap_lock:
            new, self._next_model = self._next_model, None
        if new is not None:
            old, self._model = self._model, new
            log.info("model swapped: %s v%s -> %s v%s", old.name, old.version, new.name, new.version)
            return old
        return None

    def run(self) -> PipelineStats:
        writer = _SinkWriter(self.sinks, inline=self._single_file())
        self.stats = PipelineStats()
        try:
            if self.source.live:
                self._run_live(writer)
            else:
                self._run_files(writer)
        except KeyboardInterrupt:
            log.info("interrupted; flushing sinks")
            self.stats.interrupted = True
        finally:
            self.stats.elapsed_s = time.perf_counter() - self.stats.started
            self.stats.dropped += int(getattr(self.source, "dropped", 0))
            writer.close()
        return self.stats

    # -- file sources: ordered, parallel decode, nothing dropped ------------------------------
    def _prepare(self, frame: Frame, model: Model) -> _Prepared:
        if frame.error is not None:
            return _Prepared(frame, error=frame.error)
        t0 = time.perf_counter()
        try:
            size = None
            pre = model.image_preprocessor
            if (frame.data is None and frame.loader is not None and isinstance(self.source, ImageFilesSource)
                    and model.reduced_decode and self.on_frame is None and pre is not None):
                # decoded for the model only (nobody shows the pixels): a JPEG at reduced size
                data, size = decode_image(frame.source, reduce_for=pre)
            else:
                data = frame.load()
            # frames of a video file: large ones are shrunk in two steps (see ImagePreprocessor)
            reduced = model.reduced_decode and isinstance(self.source, VideoFileSource)
            tensors = model.preprocess(data, reduced=True) if reduced else model.preprocess(data)
            size = size or _image_size(data)
            if size is not None:
                frame.meta["image_size"] = size
        except EdgeError as exc:
            return _Prepared(frame, error=str(exc))
        return _Prepared(frame, model, tensors, preprocess_ms=(time.perf_counter() - t0) * 1000)

    def _files_to_run(self) -> int:
        """How many files of an ImageFilesSource this run takes (``limit`` counted)."""
        assert isinstance(self.source, ImageFilesSource)
        n = len(self.source)
        return n if self.limit is None else min(n, self.limit)

    @staticmethod
    def _can_fork() -> bool:
        import multiprocessing  # only here: it imports socket and more, which a run over a few files never uses

        return "fork" in multiprocessing.get_all_start_methods()  # spawn would re-run the caller's main module

    def _use_processes(self) -> bool:
        """Whether image files are decoded in worker processes (the model inferring here)."""
        if self.decode == "thread" or self.on_frame is not None:
            return False
        pre = self._model.manifest.preprocess
        if pre.kind != "image" or not isinstance(self.source, ImageFilesSource):
            return False
        if self.decode != "process":
            # auto: worth it only when inference leaves a core free for decoding (measured: with
            # every core running inference threads, a decode process only adds contention) and
            # there are enough files to repay starting the workers.
            cores = _cores()
            if not ((self._model.backend.threads or cores) < cores and self._files_to_run() >= _PROCESS_MIN_FILES):
                return False
        return self._can_fork()

    def _model_workers(self) -> int:
        """Worker processes that each run the whole model on one inference thread, for a run over
        image files (0: none). Chosen when nobody fixed the inference threads nor the decoding, on
        a machine with 2 cores or more, over enough files to repay starting them: one per core (up
        to 8, or ``workers`` when the caller chose them). Each holds a copy of the model.

        Measured on 2 cores (scripts/bench_throughput.py, README): a worker per core beats both one
        process inferring on 2 threads beside decoding threads and the split of one core decoding
        while the other infers, because nothing then waits: a core whose file decodes slowly does
        not hold up the other, and no inference thread shares its core or the GIL."""
        if self.decode != "auto" or self.on_frame is not None or self.predictor is not None:
            return 0
        settings = self._model.settings
        if settings is None or settings.threads_fixed:
            return 0
        if self._model.manifest.preprocess.kind != "image" or not isinstance(self.source, ImageFilesSource):
            return 0
        cores = _cores()
        if cores < 2 or self._files_to_run() < _PROCESS_MIN_FILES or not self._can_fork():
            return 0
        return max(1, min(cores, self.workers)) if self._workers_given else min(cores, 8)

    def _run_files(self, writer: _SinkWriter) -> None:
        if (isinstance(self.source, TabularSource) and self.predictor is None and self.on_frame is None
                and self._model.image_preprocessor is None):
            # Rows cost Python work between two model calls; a second intra-op thread only spins
            # (onnxruntime) against it: measured 1.66 s against 1.07 s of CPU for 20,000 rows of a
            # logistic regression. One thread unless the caller fixed them (a forest may want more).
            first = self._model
            settings, restore = first.settings, first.backend.threads
            one = settings is not None and not settings.threads_fixed and (restore or 2) > 1
            if one:
                first.set_threads(1)
            try:
                self._run_rows(writer)
            finally:
                if one and restore is not None:
                    first.set_threads(restore)
            return
        # A video keeps the model's threads (the profile's: one per core) and decodes on threads
        # beside it. Measured on 2 cores (bench_throughput, two quiet runs): 1.98 and 1.86 s for 240
        # 1080p frames, against 2.04 and 2.00 s when one core was kept for decoding and the model
        # ran on the other (decoding, the longer stage, then had one core while inference idled).
        self._run_files_with(writer, spare=_cores() - (self._model.backend.threads or _cores()))

    def _single_file(self) -> bool:
        """One image file to run (``edge run --source cat.jpg``): decoded, inferred and written on
        this thread, with no pool or sink thread to start, feed and join for it."""
        if not isinstance(self.source, ImageFilesSource) or self.on_frame is not None:
            return False
        n = len(self.source)
        return (min(n, self.limit) if self.limit is not None else n) <= 1

    def _run_files_with(self, writer: _SinkWriter, spare: int) -> None:
        pool: Executor
        single = self._single_file()
        n_model = 0 if single else self._model_workers()
        procs = not single and not n_model and self._use_processes()
        # as many decode workers as inference leaves cores for, unless the caller chose
        workers = self.workers if self._workers_given or spare < 1 else max(1, min(self.workers, spare))
        prefetch = self.prefetch if self._prefetch_given else max(4, workers * 2)
        retired: list[Executor] = []
        pool_model = self._model
        chunks: _Chunked | None = None
        if single:
            pool = _InlineExecutor()
        elif n_model:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork (see below); the model goes to the workers by inheritance, not pickled
            pool = ProcessPoolExecutor(n_model, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_init_model_worker,
                                       initargs=(pool_model, pool_model.reduced_decode))
            chunks = _Chunked(pool, _FILES_PER_TASK)
            # enough files in flight to keep every worker busy with a task in hand and one queued
            prefetch = max(prefetch, _FILES_PER_TASK * n_model * 2)
            self.stats.model_workers = n_model
            log.info("%d worker process(es), each running the model on one thread", n_model)
        elif procs:
            m = self._model
            n = max(1, min(workers, (os.cpu_count() or 2) - 1))
            # fork, as PyTorch's DataLoader does on Linux: the worker needs no re-import of the
            # caller's main module, and touches nothing of the parent but Pillow and NumPy.
            # here, not at the top: concurrent.futures.process imports multiprocessing.connection and
            # subprocess (~1.3 MiB, ~8 ms) that a run over a few files never uses
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_init_decoder,
                                       initargs=(m.manifest.preprocess.to_json(),
                                                 m.manifest.inputs[0].to_json(),
                                                 m.reduced_decode))
        else:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="prep")
        pending: deque[tuple[Frame, Model, Future[Any]]] = deque()
        it: Iterator[Frame] = iter(self.source)
        if not isinstance(self.source, ImageFilesSource):
            # frames that arrive decoded (a video): decode the next ones on a thread of their own
            # (OpenCV lets go of the GIL) instead of between two inferences
            it = _read_ahead(it, prefetch)
        try:
            exhausted = False
            submitted = 0
            while True:
                while not exhausted and len(pending) < prefetch and not self._stop.is_set():
                    if self.limit is not None and submitted >= self.limit:
                        exhausted = True
                        break
                    try:
                        frame = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    fut: Future[Any]
                    if chunks is not None and self._model is not pool_model:
                        # the model was swapped: the workers hold the old one, so the rest runs
                        # here (what they already took is redone with the new model in _finish)
                        log.info("model swapped: inference moves back into this process")
                        with contextlib.suppress(BrokenExecutor):  # then _collect redoes those files here
                            chunks.flush()
                        pool.shutdown(wait=False)
                        retired.append(pool)
                        chunks, pool = None, ThreadPoolExecutor(workers, thread_name_prefix="prep")
                    if chunks is not None and frame.error is None:
                        try:
                            fut = chunks.submit(frame.source)
                        except BrokenExecutor:
                            chunks, pool = None, _threads_instead(pool, workers, _MODEL_WORKERS_DIED)
                            fut = pool.submit(self._prepare, frame, self._model)
                    elif procs and frame.error is None:
                        try:
                            fut = pool.submit(_decode_file, frame.source)
                        except BrokenExecutor:  # BrokenProcessPool (a thread pool without initializer never breaks)
                            procs, pool = False, _threads_instead(pool, self.workers, _DECODE_WORKERS_DIED)
                            fut = pool.submit(self._prepare, frame, self._model)
                    else:
                        fut = pool.submit(self._prepare, frame, self._model)
                    pending.append((frame, self._model, fut))
                    submitted += 1
                if not pending or self._stop.is_set():
                    break
                frame, model, fut = pending.popleft()
                if chunks is not None and chunks.holds(fut):
                    try:
                        chunks.flush()  # the rest of the files, or a chunk the next one is in
                    except BrokenExecutor:
                        chunks, pool = None, _threads_instead(pool, workers, _MODEL_WORKERS_DIED)
                self._finish(self._collect(frame, model, fut), writer)
        finally:
            if chunks is not None:
                chunks.cancel()
            for _, _, f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            for old in retired:
                old.shutdown(wait=True, cancel_futures=True)
            close = getattr(it, "close", None)
            if close is not None:
                close()

    # -- tabular rows from a file: inferred in batches, recorded one by one -------------------
    def _run_rows(self, writer: _SinkWriter) -> None:
        it = iter(self.source)
        submitted = 0
        while not self._stop.is_set():
            n = _ROW_BATCH if self.limit is None else min(_ROW_BATCH, self.limit - submitted)
            chunk = list(itertools.islice(it, n)) if n > 0 else []
            if not chunk:
                break
            submitted += len(chunk)
            self._finish_rows(chunk, writer)

    def _finish_rows(self, chunk: list[Frame], writer: _SinkWriter) -> None:
        """The records of ``chunk`` in order, the same as frame by frame: rows are checked one by
        one, the good ones run as one batch when the model takes one (else one call each), and each
        record's latency_ms is its share of the batch."""
        self._take_swap()
        model = self._model
        t0 = time.perf_counter()
        errors: dict[int, str] = {}
        good: list[int] = []
        tensors: list[np.ndarray] = []
        for i, frame in enumerate(chunk):
            if frame.error is not None:
                errors[i] = frame.error
                continue
            try:
                tensors.append(model.preprocess(frame.data)[0])
                good.append(i)
            except EdgeError as exc:
                errors[i] = str(exc)
        t1 = time.perf_counter()
        outs: dict[int, list[np.ndarray]] = {}
        if good and _takes_batches(model):
            # A lone row goes in twice: onnxruntime computes a batch of one on another code path
            # (GEMV) whose scores differ from a batch's in the last bit, and a row's record must not
            # depend on how the file happened to split into batches.
            x = np.concatenate(tensors if len(tensors) > 1 else tensors * 2)
            try:
                batch = model.infer([x])
            except EdgeError:
                batch = []  # a row the batch could not take: run them one by one to name it
            if batch and all(o.ndim > 0 and o.shape[0] == len(x) for o in batch):
                outs = {i: [o[j:j + 1] for o in batch] for j, i in enumerate(good)}
        if not outs:
            for j, i in enumerate(good):
                try:
                    outs[i] = model.infer([tensors[j]])
                except EdgeError as exc:
                    errors[i] = str(exc)
        t2 = time.perf_counter()
        share_pre = (t1 - t0) * 1000 / len(chunk)
        share_inf = (t2 - t1) * 1000 / max(1, len(good))
        recs: list[Record] = []
        for i, frame in enumerate(chunk):
            if i in errors or i not in outs:
                rec = error_record(model, frame, errors.get(i, "row could not be inferred"))
                self.stats.errors += 1
            else:
                t3 = time.perf_counter()
                try:
                    pred = model.postprocess(outs[i])
                except EdgeError as exc:
                    rec = error_record(model, frame, str(exc))
                    self.stats.errors += 1
                else:
                    post = (time.perf_counter() - t3) * 1000
                    pred.latency_ms = {"preprocess": round(share_pre, 3), "inference": round(share_inf, 3),
                                       "postprocess": round(post, 3),
                                       "total": round(share_pre + share_inf + post, 3)}
                    rec = make_record(model, frame, pred)
                    self.stats.frames += 1
                    self.stats.latencies_ms.append(pred.latency_ms["total"])
            if self.on_record is not None:
                self.on_record(rec)
            recs.append(rec)
        writer.put_many(recs)

    def _collect(self, frame: Frame, model: Model, fut: Future[Any]) -> _Prepared:
        try:
            res = fut.result()
        except BrokenExecutor:  # BrokenProcessPool (a thread pool without initializer never breaks)
            # A decode worker died (out of memory, killed): do this frame here, not lose it.
            log.warning("a worker process died; doing %s in this process", frame.source)
            return self._prepare(frame, model)
        if isinstance(res, _Prepared):
            return res
        if isinstance(res, _Predicted):
            if res.error is not None:
                return _Prepared(frame, error=res.error)
            if res.size is not None:
                frame.meta["image_size"] = res.size
            return _Prepared(frame, model, pred=res.pred)
        tensor, error, ms, size = res
        if error is not None:
            return _Prepared(frame, error=error)
        if size is not None:
            frame.meta["image_size"] = size
        return _Prepared(frame, model, [tensor], preprocess_ms=ms)

    # -- live sources: newest frame only --------------------------------------------------
    def _run_live(self, writer: _SinkWriter) -> None:
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                self._finish(self._prepare(frame, self._model), writer)
                if self.limit is not None and self.stats.frames + self.stats.errors >= self.limit:
                    break
        finally:
            self.source.close()

    def _finish(self, prep: _Prepared, writer: _SinkWriter) -> None:
        self._take_swap()
        model = self._model
        frame = prep.frame
        if prep.error is None and prep.model is not model:
            # Prepared for a model that was swapped out meanwhile: its preprocessing may differ.
            prep = self._prepare(frame, model)
        if prep.error is not None or (prep.tensors is None and prep.pred is None):
            rec = error_record(model, frame, prep.error or "frame could not be prepared")
            self.stats.errors += 1
        else:
            try:
                if prep.pred is not None:
                    rec = make_record(model, frame, prep.pred)
                elif self.predictor is not None and prep.tensors is not None:
                    frame.meta["preprocess_ms"] = prep.preprocess_ms  # for the predictor's latency_ms
                    rec = self.predictor(model, frame, prep.tensors)
                else:
                    rec = self._local(model, frame, prep)
                self.stats.frames += 1
                self.stats.latencies_ms.append(float(rec.get("latency_ms", {}).get("total", 0.0)))
            except EdgeError as exc:
                rec = error_record(model, frame, str(exc))
                self.stats.errors += 1
        if self.on_record is not None:
            self.on_record(rec)
        if self.on_frame is not None:
            self.on_frame(rec, frame.data)
        writer.put(rec)

    @staticmethod
    def _local(model: Model, frame: Frame, prep: _Prepared) -> Record:
        assert prep.tensors is not None
        t0 = time.perf_counter()
        outs = model.infer(prep.tensors)
        t1 = time.perf_counter()
        pred = model.postprocess(outs, image_size=frame.meta.get("image_size"))
        t2 = time.perf_counter()
        pred.latency_ms = {
            "preprocess": round(prep.preprocess_ms, 3),
            "inference": round((t1 - t0) * 1000, 3),
            "postprocess": round((t2 - t1) * 1000, 3),
            "total": round(prep.preprocess_ms + (t2 - t0) * 1000, 3),
        }
        return make_record(model, frame, pred)


class _InlineExecutor(Executor):
    """Runs each call at ``submit``, on the caller's thread (see ``Pipeline._single_file``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - raised to the caller by fut.result(), as from a pool
            fut.set_exception(exc)
        return fut


def _takes_batches(model: Model) -> bool:
    """Whether the model's only input has a dynamic first axis (skl2onnx exports do)."""
    specs = model.manifest.inputs
    infos = model.backend.inputs
    return (len(specs) == 1 and len(infos) == 1 and bool(specs[0].shape) and specs[0].shape[0] == -1
            and bool(infos[0].shape) and infos[0].shape[0] == -1)


def _read_ahead(it: Iterator[Frame], depth: int) -> Iterator[Frame]:
    """Iterate ``it`` on a thread of its own, ``depth`` frames ahead; its errors reach the reader.
    Closing the generator stops the thread (after the frame it is reading)."""
    q: queue.Queue[tuple[Frame | None, BaseException | None]] = queue.Queue(maxsize=max(1, depth))
    done = threading.Event()

    def put(item: tuple[Frame | None, BaseException | None]) -> bool:
        while not done.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for frame in it:
                if not put((frame, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who re-raises it
            put((None, exc))
            return
        put((None, None))

    t = threading.Thread(target=read, name="source", daemon=True)
    t.start()
    try:
        while True:
            frame, exc = q.get()
            if exc is not None:
                raise exc
            if frame is None:
                return
            yield frame
    finally:
        done.set()
        t.join()
