"""What every source yields: frames, each either decoded already or decodable on a worker thread."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Frame", "Source"]


@dataclass
class Frame:
    """One input. File sources give a ``loader`` so that decoding runs on the pipeline's workers,
    in parallel with inference; live sources give ``data`` already captured."""

    index: int
    source: str
    data: Any = None
    loader: Callable[[], Any] | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        if self.data is None and self.loader is not None:
            self.data = self.loader()
            self.loader = None
        return self.data


class Source(ABC):
    """An iterable of frames. ``live`` sources (cameras, streams) drop stale frames rather than
    queue them; file sources never drop."""

    #: a camera or stream that produces frames at its own pace
    live: bool = False
    #: what records name as their source, e.g. a directory or "camera:0"
    name: str = ""

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device or file handle."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
