"""Calibration and evaluation data: image directories and files, or arrays in .npy/.npz.

Images are kept as paths and decoded when used, with the runtime's own preprocessing, so that
calibration sees exactly the tensors a device will feed the model. Arrays are taken as model-input
tensors (already preprocessed, float).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime import DecodeError, ImagePreprocessor, InputError, Preprocess, TensorSpec, load_image

from ._errors import CalibrationError, EvalDataError, ShapeError

__all__ = [
    "IMAGE_SUFFIXES",
    "InputSet",
    "Sample",
    "fit_tensor",
    "load_calibration",
    "load_eval",
    "read_labels",
    "resolve_targets",
    "sample_tensor",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})
_BACKGROUND = frozenset({"background", "__background__", "???", "unknown"})


@dataclass(frozen=True)
class Sample:
    """One input: an image file or a float tensor (without batch axis), and maybe its label."""

    path: Path | None = None
    tensor: np.ndarray | None = None
    label: int | str | None = None

    @property
    def origin(self) -> str:
        return str(self.path) if self.path is not None else "array"


@dataclass
class InputSet:
    samples: list[Sample]
    kind: str  # "images" or "tensors"
    source: str
    labelled: bool = False
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _decodable(paths: Sequence[Path], skipped: list[str]) -> list[Path]:
    """Keep the files Pillow can open, so a stray corrupt file does not end a long calibration."""
    from PIL import Image, UnidentifiedImageError

    good: list[Path] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.verify()
            good.append(p)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            skipped.append(f"{p.name}: {exc}")
    return good


def _array_samples(path: Path, *, what: str) -> tuple[list[Sample], bool]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read {what} array ({exc}); save it with numpy.save/savez") from exc
    y = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            xkey = "x" if "x" in keys else ("X" if "X" in keys else (keys[0] if len(keys) == 1 else None))
            if xkey is None:
                raise CalibrationError(f"{path}: .npz holds {keys}; name the inputs 'x' (and labels 'y')")
            x = loaded[xkey]
            ykey = "y" if "y" in keys else ("Y" if "Y" in keys else None)
            if ykey is not None:
                y = loaded[ykey]
    else:
        x = loaded
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise CalibrationError(f"{path}: {what} array is empty (shape {list(x.shape)})")
    if x.dtype.kind not in "fiub":
        raise CalibrationError(f"{path}: {what} array has dtype {x.dtype}; numbers are needed")
    if y is not None and len(y) != len(x):
        raise EvalDataError(f"{path}: {len(x)} inputs but {len(y)} labels; x and y must have the same length")
    labels = [None] * len(x) if y is None else [_plain(v) for v in y]
    return [Sample(tensor=np.asarray(row), label=lab) for row, lab in zip(x, labels, strict=True)], y is not None


def _plain(v: object) -> int | str:
    if isinstance(v, np.integer | int):
        return int(v)
    if isinstance(v, np.floating | float) and float(v).is_integer():
        return int(v)
    return str(v)


def load_calibration(paths: Sequence[Path], *, limit: int) -> InputSet:
    """Image dirs/files and .npy/.npz arrays, up to ``limit`` samples, in a stable order."""
    if not paths:
        raise CalibrationError("int8 quantization needs calibration data: pass --calibration DIR_OR_NPY "
                               "(a directory of representative images, or a .npy of input tensors)")
    samples: list[Sample] = []
    skipped: list[str] = []
    kinds: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CalibrationError(f"calibration path {p} does not exist")
        if p.is_dir():
            files = _image_files(p)
            if not files:
                continue
            samples += [Sample(path=f) for f in _decodable(files, skipped)]
            kinds.add("images")
        elif p.suffix.lower() in (".npy", ".npz"):
            arr, _ = _array_samples(p, what="calibration")
            samples += arr
            kinds.add("tensors")
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            samples += [Sample(path=f) for f in _decodable([p], skipped)]
            kinds.add("images")
        else:
            raise CalibrationError(f"calibration path {p} is neither a directory, an image, nor .npy/.npz")
    if not samples:
        where = ", ".join(str(p) for p in paths)
        extra = f" ({len(skipped)} unreadable: {'; '.join(skipped[:3])})" if skipped else ""
        raise CalibrationError(
            f"no usable calibration images in {where}{extra}; put representative images "
            f"({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))}) in the directory, or pass a .npy of inputs")
    if len(kinds) > 1:
        raise CalibrationError("calibration mixes images and arrays; use one kind (images, or one .npy)")
    if skipped:
        log.warning("calibration: skipped %d unreadable file(s): %s", len(skipped), "; ".join(skipped[:5]))
    if len(samples) > limit:
        # An even stride keeps every class/folder represented when the list is sorted by name.
        idx = np.linspace(0, len(samples) - 1, limit).round().astype(int)
        samples = [samples[i] for i in idx]
    return InputSet(samples, kinds.pop(), ", ".join(str(p) for p in paths), skipped=skipped)


def load_eval(path: Path) -> InputSet:
    """A labelled set (class subfolders, or .npz with ``x`` and ``y``) or unlabelled inputs.

    A directory with images at its top level is an unlabelled set of those images; a directory
    whose subfolders hold the images is labelled by the subfolder names.
    """
    p = Path(path)
    if not p.exists():
        raise EvalDataError(f"eval path {p} does not exist")
    skipped: list[str] = []
    if p.is_dir():
        top = _image_files(p)
        if top:
            return InputSet([Sample(path=f) for f in _decodable(top, skipped)], "images", str(p), skipped=skipped)
        samples: list[Sample] = []
        for sub in sorted(d for d in p.iterdir() if d.is_dir()):
            samples += [Sample(path=f, label=sub.name) for f in _decodable(_image_files(sub), skipped)]
        if not samples:
            raise EvalDataError(f"eval directory {p} has no images, neither at its top level nor in class "
                                "subfolders (DIR/<label>/*.jpg)")
        return InputSet(samples, "images", str(p), labelled=True, skipped=skipped)
    if p.suffix.lower() in (".npz", ".npy"):
        try:
            arr, labelled = _array_samples(p, what="eval")
        except CalibrationError as exc:
            raise EvalDataError(str(exc)) from exc
        return InputSet(arr, "tensors", str(p), labelled=labelled)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return InputSet([Sample(path=p)], "images", str(p))
    raise EvalDataError(f"eval path {p} must be a directory of images (or class subfolders) or a .npz with x, y")


def read_labels(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalDataError(f"labels file {path} cannot be read ({exc.strerror})") from exc
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise EvalDataError(f"labels file {path} is empty; write one label a line")
    return lines


def fit_labels(labels: list[str], n_classes: int | None, origin: str) -> list[str]:
    """Check the labels against the model's class count, dropping a leading background class.

    Label files made for TF-slim models carry a ``background`` line 0 (1001 lines for ImageNet)
    that models trained without it (1000 outputs) do not have.
    """
    if n_classes is None or len(labels) == n_classes:
        return labels
    if len(labels) == n_classes + 1 and labels[0].strip().lower() in _BACKGROUND:
        log.info("%s: dropping label 0 %r, the model has %d classes", origin, labels[0], n_classes)
        return labels[1:]
    raise EvalDataError(f"{origin} has {len(labels)} labels but the model outputs {n_classes} classes; "
                        "give a labels file with one line per output class")


def resolve_targets(data: InputSet, labels: Sequence[str], *, n_classes: int | None = None,
                    by_value: Sequence[str] | None = None) -> np.ndarray:
    """Class indices for a labelled set; an error names the labels the model does not know.

    Integer labels in arrays are class indices, unless ``by_value`` (e.g. scikit-learn's
    ``classes_``) says classes are identified by value.
    """
    names = list(by_value) if by_value is not None else list(labels)
    index = {n: i for i, n in enumerate(names)}
    count = n_classes if n_classes and n_classes > 0 else len(labels)
    out: list[int] = []
    unknown: list[str] = []
    for s in data.samples:
        lab = s.label
        if lab is None:
            raise EvalDataError(f"{data.source}: some inputs have no label")
        if isinstance(lab, int) and by_value is None:
            if not 0 <= lab < count:
                unknown.append(str(lab))
                continue
            out.append(lab)
        elif str(lab) in index:
            out.append(index[str(lab)])
        else:
            unknown.append(str(lab))
    if unknown:
        shown = sorted(set(unknown))[:8]
        known = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else f"ids 0..{count - 1}"
        if not names and any(not isinstance(s.label, int) for s in data.samples):
            raise EvalDataError(f"{data.source}: the eval set is labelled but the model has no labels; "
                                "pass --labels FILE with one class name a line")
        raise EvalDataError(
            f"{data.source}: eval labels {shown} are not classes of the model ({count} classes: {known}); "
            "name the eval folders (or y values) after the model's labels, or pass the matching --labels file")
    return np.asarray(out, dtype=np.int64)


def sample_tensor(sample: Sample, preprocess: Preprocess | None, spec: TensorSpec) -> np.ndarray:
    """The float input tensor (batch of one) of ``spec`` for one sample."""
    if sample.path is not None:
        if preprocess is None or preprocess.kind != "image":
            raise CalibrationError(f"{sample.path}: images need image preprocessing; the model's input "
                                   f"{spec.name!r} {spec.shape} takes tensors (pass a .npy instead)")
        try:
            pre = ImagePreprocessor(preprocess, spec.replace(dtype="float32", quantization=None))
            return pre(load_image(sample.path))
        except DecodeError as exc:
            raise CalibrationError(str(exc)) from exc
        except InputError as exc:
            raise ShapeError(f"{sample.path}: {exc}") from exc
    assert sample.tensor is not None
    return fit_tensor(sample.tensor.astype(np.float32, copy=False), spec, origin="array")


def fit_tensor(x: np.ndarray, spec: TensorSpec, *, origin: str) -> np.ndarray:
    """Give a sample the model's batch-of-one shape, or say why it cannot take it."""
    want = [d if d > 0 else -1 for d in spec.shape]
    inner = want[1:] if len(want) > 1 else []
    if list(x.shape) == [1, *[abs(d) for d in inner]] or _matches(x.shape, want):
        return np.ascontiguousarray(x)
    if _matches((1, *x.shape), want):
        return np.ascontiguousarray(x[None, ...])
    n = int(np.prod([d for d in inner if d > 0])) if inner else 1
    if all(d > 0 for d in inner) and x.size == n:
        return np.ascontiguousarray(x.reshape([1, *inner]))
    raise ShapeError(f"{origin}: an input of shape {list(x.shape)} does not fit the model input "
                     f"{spec.name!r} of shape {spec.shape}; give arrays shaped (N, {', '.join(map(str, inner))})")


def _matches(shape: Sequence[int], want: Sequence[int]) -> bool:
    return len(shape) == len(want) and all(w in (-1, s) for s, w in zip(shape, want, strict=True))


def iter_progress(items: Sequence[Sample], *, desc: str, enabled: bool) -> Iterator[Sample]:
    """tqdm when asked for (the CLI), plain iteration otherwise (library use)."""
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, unit="input", leave=False)
