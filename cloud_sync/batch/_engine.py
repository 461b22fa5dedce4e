"""The engine interface: run a predictor over inputs and stream the rows back as they come.

An engine yields lists of rows in whatever order its workers finish; the driver writes each list
in one transaction. ``open_engine`` picks one by name: ``local`` (``_local.py``, no Ray) or
``ray`` (``_ray.py``, Ray Data on a local or remote cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ._errors import BatchError
from ._inputs import InputItem
from ._predictor import PredictorSpec, Row

__all__ = ["ENGINES", "Engine", "EngineOptions", "open_engine"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """``workers`` model replicas (Ray actors; the local engine has one), ``batch_size`` inputs
    per call, ``address`` of a running Ray cluster (None: start Ray on this machine)."""

    workers: int = 1
    batch_size: int = 16
    address: str | None = None
    #: the local Ray's object store (bytes); None lets Ray choose (30 % of memory)
    object_store_memory: int | None = None
    #: CPUs the local Ray may use; None: workers x threads
    num_cpus: int | None = None
    #: wraps loading the model in this process (the local engine), e.g. to filter what native
    #: libraries write to stderr while they load; Ray actors load where their output is not shown
    load_guard: Callable[[], AbstractContextManager[None]] | None = None


class Engine(Protocol):
    name: str

    def run(self, items: Sequence[InputItem], spec: PredictorSpec) -> Iterator[list[Row]]:
        """Rows for every item (one each, errors included), a list at a time, as they are ready."""
        ...

    def close(self) -> None: ...


def open_engine(name: str, options: EngineOptions) -> Engine:
    if options.workers < 1:
        raise BatchError(f"workers must be at least 1, not {options.workers}")
    if options.batch_size < 1:
        raise BatchError(f"batch size must be at least 1, not {options.batch_size}")
    if name == "local":
        from ._local import LocalEngine

        if options.address is not None:
            raise BatchError("--address needs --engine ray")
        return LocalEngine(options)
    if name == "ray":
        from ._ray import RayEngine

        return RayEngine(options)
    raise BatchError(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")
