"""Keep the ML libraries' own chatter off the terminal unless ``-v`` asks for it.

TensorFlow, absl, OpenCV, glog and torch read their log level from the environment when they load,
so the knobs are set before any command imports them (the ``edge`` group's callback). LiteRT's
C++ runtime ignores all of them and writes lines such as "INFO: Created TensorFlow Lite XNNPACK
delegate for CPU." straight to file descriptor 2, so around model loading (and only there: no other
thread writes then) :func:`native_stderr_filtered` sends fd 2 to a file and passes on what is not
known chatter, so real errors from the C side still reach the user.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["native_stderr_filtered", "quiet_libraries", "verbosity"]

#: set once from ``edge -v``; 0 means the libraries stay quiet
_VERBOSE = 0

# Environment knobs read by the libraries at load time. setdefault: a user's own setting wins.
_ENV_QUIET = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow C++: errors only
    "GLOG_minloglevel": "2",  # glog users (OpenCV's DNN modules, some delegates)
    "OPENCV_LOG_LEVEL": "ERROR",
    "OPENCV_FFMPEG_LOGLEVEL": "16",  # AV_LOG_ERROR
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "ABSL_MIN_LOG_LEVEL": "2",
    "GRPC_VERBOSITY": "ERROR",
}

# Python loggers of those libraries: they log INFO/WARNING lines nobody running `edge` asked for.
_LIBRARY_LOGGERS = ("absl", "tensorflow", "h5py", "jax", "torch", "onnxruntime", "numexpr", "PIL")

# Python warnings raised inside these packages (deprecations, "this op is slow") are theirs to fix.
_WARNING_MODULES = r"(tensorflow|keras|tf_keras|tf2onnx|torch|onnx|onnxruntime|onnxscript|skl2onnx|jax|absl)(\.|$)"

# What the native runtimes print on their own at load: LiteRT's "INFO: ..." and glog/absl's
# "I1201 12:00:00.000000 ..." / "W0000 ..." info and warning lines, and absl's preamble (TensorFlow
# 2.16+ logs through absl before anything initialises it, which TF_CPP_MIN_LOG_LEVEL does not reach).
_CHATTER = re.compile(r"^(INFO: |VERBOSE: |[IW]\d{4} [\d:.]+ |WARNING: All log messages before absl::InitializeLog)")


def verbosity() -> int:
    return _VERBOSE


def quiet_libraries(verbose: int) -> None:
    """Silence the libraries' logs unless ``verbose`` (the count of ``-v``) is at least 1."""
    global _VERBOSE
    _VERBOSE = verbose
    if verbose > 0:
        return
    for key, value in _ENV_QUIET.items():
        os.environ.setdefault(key, value)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=_WARNING_MODULES)


@contextmanager
def native_stderr_filtered(enabled: bool | None = None) -> Iterator[None]:
    """Drop known library chatter that C code writes to fd 2 while the block runs; pass on the rest.

    ``enabled`` defaults to "not verbose". Python output to ``sys.stderr`` inside the block (log
    records, warnings) goes through the same file and is passed on as well, after the block.
    """
    if enabled is None:
        enabled = _VERBOSE == 0
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1  # stderr is not a real file (a test runner's capture): nothing native to filter
    if not enabled or fd != 2:
        yield
        return
    import tempfile  # here: `edge --help` and commands that load no model never need it

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _CHATTER.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
