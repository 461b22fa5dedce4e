"""OpenCV DNN backend: runs ONNX through ``cv2.dnn``.

It exists for 32-bit Raspberry Pi OS, where onnxruntime publishes no wheel but OpenCV does.
OpenCV cannot list a network's input shapes, so the bundle manifest supplies them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._errors import BackendUnavailableError, InferenceError, InputError, ModelError
from ._base import Backend, BackendOptions, RawCall, TensorInfo

__all__ = ["OpenCVDnnBackend"]

log = logging.getLogger(__name__)


class OpenCVDnnBackend(Backend):
    name: ClassVar[str] = "opencv-dnn"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    modules: ClassVar[tuple[str, ...]] = ("cv2",)
    install_hint: ClassVar[str] = "pip install 'edge-runtime[camera]'  (installs opencv-python-headless)"
    extra: ClassVar[str] = "camera"
    reads_io: ClassVar[bool] = False

    def __init__(self, net: Any, cv2: Any, options: BackendOptions) -> None:
        self._net = net
        self._cv2 = cv2
        self.threads = options.threads
        #: set by load(): OpenCV 5's new graph engine cannot run some models its classic engine can
        #: (int8 QDQ pooling, e.g. a quantized YOLOv8), so run() may reload the model on the classic one
        self._model_path: Path | None = None
        self._classic = False
        self.inputs = [TensorInfo.from_spec(s) for s in options.inputs]
        if options.outputs:
            self.outputs = [TensorInfo.from_spec(s) for s in options.outputs]
            self._out_names = [s.name for s in options.outputs]
        else:
            self._out_names = list(net.getUnconnectedOutLayersNames())
            self.outputs = [TensorInfo(n, (), np.dtype("float32")) for n in self._out_names]

    @classmethod
    def load(cls, model_path: Path, options: BackendOptions) -> OpenCVDnnBackend:
        try:
            import cv2
        except ImportError as exc:
            raise BackendUnavailableError(f"the opencv-dnn backend needs OpenCV: {cls.install_hint}") from exc
        if not options.inputs:
            raise ModelError(f"{model_path}: opencv-dnn needs the input specs of a bundle manifest; "
                             "wrap the model with `edge bundle` first")
        if options.threads:
            cv2.setNumThreads(options.threads)
        try:
            net = cv2.dnn.readNetFromONNX(str(model_path))
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        except cv2.error as exc:
            raise ModelError(f"{model_path}: OpenCV DNN cannot load it: {_cv_message(exc)}") from exc
        if net.empty():
            raise ModelError(f"{model_path}: OpenCV DNN loaded an empty network")
        backend = cls(net, cv2, options)
        backend._model_path = model_path
        return backend

    @classmethod
    def raw(cls, model_path: Path, options: BackendOptions) -> RawCall:
        import cv2

        if options.threads:
            cv2.setNumThreads(options.threads)
        net = cv2.dnn.readNetFromONNX(str(model_path))
        in_names = [s.name for s in options.inputs]
        out_names = [s.name for s in options.outputs] or list(net.getUnconnectedOutLayersNames())

        def call(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            for n, a in zip(in_names, arrays, strict=True):
                net.setInput(a, n)
            return list(net.forward(out_names))

        return call

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise InputError(f"model takes {len(self.inputs)} input(s), got {len(inputs)}")
        for info, arr in zip(self.inputs, inputs, strict=True):
            expect = tuple(info.shape)
            if len(expect) != arr.ndim or any(e not in (-1, a) for e, a in zip(expect, arr.shape, strict=True)):
                raise InputError(f"input {info.name!r} must have shape {list(expect)}, got {list(arr.shape)}")
        try:
            for info, arr in zip(self.inputs, inputs, strict=True):
                self._net.setInput(np.ascontiguousarray(arr), info.name)
            outs = self._net.forward(self._out_names)
        except self._cv2.error as exc:
            if self._use_classic_engine(exc):
                return self.run(inputs)
            raise InferenceError(f"OpenCV DNN failed while running the model: {_cv_message(exc)}") from exc
        return [np.asarray(o) for o in outs]

    def _use_classic_engine(self, exc: Exception) -> bool:
        """Reload the model on OpenCV's classic engine after the default one failed to run it (once)."""
        cv2 = self._cv2
        engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
        if self._classic or engine is None or self._model_path is None:
            return False
        self._classic = True
        log.warning("OpenCV DNN's default engine cannot run %s (%s); using its classic engine",
                    self._model_path.name, _cv_message(exc))
        try:
            net = cv2.dnn.readNetFromONNX(str(self._model_path), engine=engine)
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        except cv2.error as exc2:
            log.warning("the classic engine cannot load it either: %s", _cv_message(exc2))
            return False
        self._net = net
        return True

    def library_version(self) -> str:
        return f"opencv {self._cv2.__version__}"


_CV_PREFIX = re.compile(r"OpenCV\(\d[^)]*\) \S+:\d+: error: ")


def _cv_message(exc: BaseException) -> str:
    """An OpenCV error as one line that says what failed.

    When the ONNX importer rejects a node, OpenCV (4.6 and 5.0 alike) writes ``... in function
    'handleNode'`` and then, on lines prefixed with ``> ``, the node and the nested error with an
    assertion's ``expected ...`` lines, ending with a bare ``>``: neither the first nor the last
    line names the cause. Keep the nested lines, joined, without the source-file prefixes.
    """
    lines = [line.lstrip("> \t").strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(exc).__name__
    text = " ".join(" ".join(lines[1:] or lines).split())
    return _CV_PREFIX.sub("", text) or type(exc).__name__
