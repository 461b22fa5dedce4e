"""PyTorch models to ONNX (``torch.onnx.export``, the dynamo exporter) and to TFLite (litert-torch).

Three ways to name a model: ``module:factory`` plus a weights file (a state_dict, read with
``weights_only=True``), a TorchScript file, or a ``torch.export`` program (``.pt2``).

PyTorch → TFLite uses **litert-torch** (Google's PyTorch → LiteRT converter), not onnx2tf.
Measured here: litert-torch 0.10 installs next to torch 2.13, ai-edge-litert 2.3.0 (it pins that
exact version), NumPy 2 and onnxruntime 1.31, and converts EfficientNet-Lite0 in ~8 s with
outputs within 1e-5 of PyTorch. onnx2tf 1.29 would downgrade NumPy to 1.26, onnxruntime to
1.23, ai-edge-litert to 2.1 and protobuf to 4.25 and pull tensorflow 2.19 next to 2.21, breaking
the runtime's own dependencies. litert-torch's cost: it pins typing-extensions<4.13 (through
xdsl), which moves pydantic to 2.11, still inside this project's range. Its companion
ai-edge-quantizer does the TFLite quantization (see ``_quantize/tflite.py``).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runtime import Preprocess

from .._deps import quiet, require
from .._errors import ShapeError, SourceLoadError, UnsupportedModelError
from .._ort import first_line
from ._base import Source, dist_version

__all__ = ["TorchExportSource", "TorchModuleSource", "TorchScriptSource"]

log = logging.getLogger(__name__)

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_TS_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
#: torch.onnx's dynamo exporter emits opset 18 at least
_MIN_DYNAMO_OPSET = 18


class _TorchBase(Source):
    targets: ClassVar[tuple[str, ...]] = ("onnx", "tflite")

    module: Any = None
    input_shape: list[int]
    n_outputs: int = 0

    def _torch(self) -> Any:
        return require("torch", "converting PyTorch models")

    def _shape(self, fallback: Sequence[int] | None = None) -> list[int]:
        shape = self.options.input_shape or (list(fallback) if fallback else None)
        if not shape:
            raise ShapeError(f"{self.location}: PyTorch models do not record their input shape; "
                             "give it with --input-shape, e.g. --input-shape 1,3,224,224")
        return list(shape)

    def _probe(self, module: Any) -> None:
        """Run once on zeros: a shape the model cannot take fails here, named, not deep in export."""
        torch = self._torch()
        try:
            with torch.no_grad():
                out = module(torch.zeros(self.input_shape))
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ShapeError(f"{self.location}: the model cannot take input shape {self.input_shape} "
                             f"({first_line(exc)}); pass the shape it was built for with --input-shape") from exc
        outs = out if isinstance(out, list | tuple) else [out]
        if not all(isinstance(o, torch.Tensor) for o in outs):
            raise UnsupportedModelError(f"{self.location}: forward() returns {type(out).__name__}; "
                                        "export needs a tensor or a tuple of tensors")
        self.n_outputs = len(outs)
        first = outs[0]
        if first.ndim == 2 and first.shape[1] == 1:
            self.task = "regression"

    def default_preprocess(self, target: str) -> Preprocess | None:
        if len(self.input_shape) == 4 and self.input_shape[1] in (1, 3):
            return Preprocess(kind="image")
        return Preprocess(kind="none")

    def _is_image(self) -> bool:
        return len(self.input_shape) == 4 and self.input_shape[1] in (1, 3)

    def layout(self, target: str) -> str | None:
        if self._is_image():
            # TFLite kernels are NHWC; the exported TFLite model takes NHWC (see _export_tflite).
            return "NHWC" if target == "tflite" else "NCHW"
        return "NC" if len(self.input_shape) == 2 else None

    def info(self) -> dict[str, Any]:
        return {"framework": "pytorch", "version": dist_version("torch"), "location": self.location,
                "input_shape": self.input_shape}

    # -- export ------------------------------------------------------------------------------
    def export(self, target: str, out: Path, *, data: Sequence[np.ndarray] = ()) -> Path:
        self.check_target(target)
        if target == "onnx":
            return self._export_onnx(out)
        return self._export_tflite(out)

    def _onnx_exportable(self) -> Any:
        return self.module

    #: the dynamo exporter (torch.export based); TorchScript modules need the TorchScript one
    _dynamo: ClassVar[bool] = True

    def _export_onnx(self, out: Path) -> Path:
        torch = self._torch()
        sample = (torch.zeros(self.input_shape),)
        names = ["logits"] if self.n_outputs == 1 else [f"output_{i}" for i in range(self.n_outputs)]
        if not self._dynamo:
            try:
                with quiet("torch.onnx.export"):
                    torch.onnx.export(self._onnx_exportable(), sample, str(out), input_names=["input"],
                                      output_names=names, opset_version=self.options.opset, dynamo=False)
            except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
                raise UnsupportedModelError(_export_failure("ONNX", exc)) from exc
            return out
        require("onnxscript", "exporting PyTorch models to ONNX (torch.onnx dynamo exporter)")
        try:
            with quiet("torch.onnx.export"):
                program = torch.onnx.export(
                    self._onnx_exportable(), sample, input_names=["input"], output_names=names,
                    opset_version=max(self.options.opset, _MIN_DYNAMO_OPSET), dynamo=True, external_data=False,
                    verbose=False)
                if program is not None:
                    program.save(str(out), external_data=False)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
            raise UnsupportedModelError(_export_failure("ONNX", exc)) from exc
        if program is None:
            raise UnsupportedModelError(f"{self.location}: torch.onnx.export returned no program")
        return out

    def _tflite_module(self) -> Any:
        return self.module

    def _export_tflite(self, out: Path) -> Path:
        torch = self._torch()
        litert_torch = require("litert_torch", "converting PyTorch models to TFLite")
        module = self._tflite_module()
        shape = list(self.input_shape)
        if self._is_image():
            # TFLite's kernels and every TFLite image pipeline are NHWC; litert-torch transposes
            # at the boundary and its passes fold the transposes into the convolutions.
            module = litert_torch.to_channel_last_io(module, args=[0])
            # The wrapped model is in eval mode already (see load); .eval() here would recurse
            # into a torch.export module, which refuses train()/eval() calls.
            module.training = False
            shape = [shape[0], shape[2], shape[3], shape[1]]
        try:
            with quiet("litert_torch.convert"):
                edge = litert_torch.convert(module, (torch.zeros(shape),))
                edge.export(str(out))
        except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as exc:
            raise UnsupportedModelError(_export_failure("TFLite (litert-torch)", exc)) from exc
        return out


class TorchModuleSource(_TorchBase):
    """``package.module:factory`` (a callable returning an ``nn.Module``) plus ``--weights``."""

    framework: ClassVar[str] = "pytorch"
    described_as: ClassVar[str] = "MODULE:FACTORY (a callable returning an nn.Module) with --weights FILE"

    @classmethod
    def claims(cls, location: str) -> bool:
        return bool(_FACTORY.match(location)) and not Path(location).exists()

    def load(self) -> None:
        torch = self._torch()
        module_name, _, attr = self.location.partition(":")
        try:
            mod = importlib.import_module(module_name)
        except ImportError as exc:
            raise SourceLoadError(f"cannot import module {module_name!r} for factory {self.location} ({exc}); "
                                  "install it or add its directory to PYTHONPATH") from exc
        factory: Any = mod
        for part in attr.split("."):
            if not hasattr(factory, part):
                raise SourceLoadError(f"module {module_name!r} has no attribute {attr!r}; give the factory as "
                                      "MODULE:CALLABLE, e.g. mypkg.models:build_model")
            factory = getattr(factory, part)
        if not callable(factory):
            raise SourceLoadError(f"{self.location} is a {type(factory).__name__}, not a callable factory")
        try:
            module = factory()
        except TypeError as exc:
            raise SourceLoadError(f"factory {self.location} cannot be called without arguments ({exc}); "
                                  "wrap it in a function that takes none") from exc
        if not isinstance(module, torch.nn.Module):
            raise SourceLoadError(f"factory {self.location} returned {type(module).__name__}, not a torch.nn.Module")
        if self.options.weights is not None:
            _load_weights(module, Path(self.options.weights), self.location)
        else:
            log.warning("%s: no --weights given; converting the factory's own (maybe untrained) weights",
                        self.location)
        module.eval()
        self.module = module
        self.input_shape = self._shape(getattr(factory, "input_shape", None))
        self._probe(module)

    def info(self) -> dict[str, Any]:
        d = super().info()
        if self.options.weights is not None:
            d["weights"] = Path(self.options.weights).name
        return d


class TorchScriptSource(_TorchBase):
    """A TorchScript file (``torch.jit.save``); exports to ONNX only."""

    framework: ClassVar[str] = "torchscript"
    targets: ClassVar[tuple[str, ...]] = ("onnx",)
    # torch.export cannot trace a ScriptModule; the TorchScript-based exporter reads its graph.
    _dynamo: ClassVar[bool] = False
    described_as: ClassVar[str] = "a TorchScript file (.pt, .pth, .ts) with --input-shape"

    @classmethod
    def claims(cls, location: str) -> bool:
        return location.lower().endswith(_TS_SUFFIXES)

    def check_target(self, target: str) -> None:
        if target == "tflite":
            raise UnsupportedModelError(
                f"{self.location}: TorchScript cannot go to TFLite (litert-torch needs torch.export); pass "
                "MODULE:FACTORY with --weights, or a torch.export program (.pt2), or convert to ONNX")
        super().check_target(target)

    def load(self) -> None:
        torch = self._torch()
        path = Path(self.location)
        if not path.is_file():
            raise SourceLoadError(f"{path}: no such file")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            if _looks_like_state_dict(torch, path):
                raise SourceLoadError(f"{path} holds weights (a state_dict), not a TorchScript model; pass "
                                      f"MODULE:FACTORY --weights {path}") from exc
            raise SourceLoadError(f"{path}: not a TorchScript file ({first_line(exc)}); save one with "
                                  "torch.jit.save(torch.jit.script(model), PATH)") from exc
        module.eval()
        self.module = module
        self.input_shape = self._shape()
        self._probe(module)


class TorchExportSource(_TorchBase):
    """A ``torch.export`` program saved with ``torch.export.save`` (``.pt2``)."""

    framework: ClassVar[str] = "torch.export"
    described_as: ClassVar[str] = "a torch.export program (.pt2)"

    program: Any = None

    @classmethod
    def claims(cls, location: str) -> bool:
        return location.lower().endswith(".pt2")

    def load(self) -> None:
        torch = self._torch()
        path = Path(self.location)
        if not path.is_file():
            raise SourceLoadError(f"{path}: no such file")
        try:
            program = torch.export.load(str(path))
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise SourceLoadError(f"{path}: not a torch.export program ({first_line(exc)}); save one with "
                                  "torch.export.save(torch.export.export(model, args), PATH)") from exc
        self.program = program
        example = getattr(program, "example_inputs", None)
        fallback = None
        if example and example[0]:
            fallback = list(example[0][0].shape)
        self.input_shape = self._shape(fallback)
        module = program.module()
        # Exported modules refuse .eval(); torch has a dedicated call that switches the ops
        # whose behaviour depends on the mode (dropout, batch norm) to inference.
        move = getattr(getattr(torch, "ao", None) and torch.ao.quantization, "move_exported_model_to_eval", None)
        self.module = move(module) if move is not None else module
        self._probe(self.module)

    def _onnx_exportable(self) -> Any:
        return self.program


def _load_weights(module: Any, path: Path, factory: str) -> None:
    import pickle

    torch = require("torch", "loading PyTorch weights")
    if not path.is_file():
        raise SourceLoadError(f"weights file {path} does not exist")
    try:
        # weights_only=True: tensors and plain containers only, never arbitrary pickled code.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SourceLoadError(f"{path}: not a plain state_dict ({first_line(exc)}); weights_only=True refuses "
                              "pickled objects: save with torch.save(model.state_dict(), PATH)") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise SourceLoadError(f"{path}: cannot read PyTorch weights ({first_line(exc)})") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in state and isinstance(state[key], dict) and len(state) <= 4:
                log.info("%s: using the checkpoint's %r entry", path, key)
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceLoadError(f"{path}: holds a {type(state).__name__}, not a state_dict of tensors; save with "
                              "torch.save(model.state_dict(), PATH)")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {'; '.join(shapes[:2])})")
        raise SourceLoadError(f"weights file {path} does not match the module from {factory}: "
                              f"{', '.join(parts)} key(s); check that the factory builds the architecture "
                              "(and number of classes) these weights were trained with")
    module.load_state_dict(state, strict=True)


def _looks_like_state_dict(torch: Any, path: Path) -> bool:
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError):
        return False
    return isinstance(obj, dict)


def _export_failure(what: str, exc: BaseException) -> str:
    # torch.onnx wraps the real cause (an unsupported op, a data-dependent branch) in a generic error.
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    msg = re.sub(r"\x1b\[[0-9;]*m", "", first_line(root))
    op = re.search(r"(aten::\w+|aten\.\w+(?:\.\w+)?)", str(exc))
    hint = f"the op {op.group(1)} has no {what} conversion; " if op else ""
    return (f"PyTorch → {what} export failed: {hint}{msg}; rewrite that part of forward() with supported ops "
            "or convert to the other target")
