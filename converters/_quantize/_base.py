"""The interface of a target's quantizer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._errors import QuantizationError
from .._options import ConvertOptions

__all__ = ["NotApplicable", "QuantResult", "Quantizer"]


class NotApplicable(QuantizationError):
    """This mode cannot do anything for this model; the variant is skipped and the report says why."""


@dataclass
class QuantResult:
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Quantizer(ABC):
    """Turns the float model of one target format into a quantized variant."""

    target: ClassVar[str]
    modes: ClassVar[tuple[str, ...]] = ("fp16", "dynamic", "int8")

    @abstractmethod
    def quantize(self, float_model: Path, mode: str, calibration: Sequence[np.ndarray], options: ConvertOptions,
                 out: Path) -> QuantResult:
        """Write the ``mode`` variant of ``float_model`` to ``out``; ``calibration`` feeds int8."""
