"""Import heavy frameworks only when a conversion needs them, with an install hint when missing."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from collections.abc import Iterator
from types import ModuleType

from ._errors import MissingDependencyError

__all__ = ["quiet", "require"]

log = logging.getLogger(__name__)

# module -> the pip distribution that provides it
_DISTS = {
    "torch": "torch",
    "tensorflow": "tensorflow-cpu",
    "keras": "keras (comes with tensorflow-cpu)",
    "tf2onnx": "tf2onnx",
    "skl2onnx": "skl2onnx",
    "sklearn": "scikit-learn",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxconverter_common": "onnxconverter-common",
    "litert_torch": "litert-torch",
    "ai_edge_quantizer": "ai-edge-quantizer (comes with litert-torch)",
    "joblib": "joblib",
    "onnxscript": "onnxscript",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        dist = _DISTS.get(top, top)
        raise MissingDependencyError(
            f"{purpose} needs {dist}, which is not installed ({exc}); "
            f"install it with: pip install 'edge-runtime[convert]' (or pip install {dist.split()[0]})"
        ) from exc


@contextlib.contextmanager
def quiet(what: str) -> Iterator[None]:
    """Keep a converter's own prints off stdout (where `edge convert --json` writes) and in the log."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        # Converters warn per tensor (e.g. fp16 truncation of tiny weights); the report summarizes.
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            text = buf.getvalue().strip()
            if text:
                log.debug("%s printed:\n%s", what, text)
