"""The local engine: one model in this process, a plain loop over the inputs, no Ray.

Reading and decoding the next inputs overlaps inference through a small thread pool (Pillow and
the backends release the GIL for most of their work); the rows come back in input order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ._engine import EngineOptions
from ._inputs import InputItem, iter_chunks
from ._predictor import BatchPredictor, PredictorSpec, Row

__all__ = ["LocalEngine"]

log = logging.getLogger(__name__)


class LocalEngine:
    name = "local"

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        if options.workers != 1:
            log.info("the local engine runs one model; --workers %d is for --engine ray", options.workers)

    def run(self, items: Sequence[InputItem], spec: PredictorSpec) -> Iterator[list[Row]]:
        if self.options.load_guard is not None:
            with self.options.load_guard():
                predictor = BatchPredictor(spec)
        else:
            predictor = BatchPredictor(spec)
        try:
            # One batch ahead: the next chunk is read and inferred while the driver writes this one.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-local") as pool:
                pending = None
                for chunk in iter_chunks(list(items), self.options.batch_size):
                    fut = pool.submit(predictor.predict_items, chunk)
                    if pending is not None:
                        yield pending.result()
                    pending = fut
                if pending is not None:
                    yield pending.result()
        finally:
            predictor.close()

    def close(self) -> None:
        pass
