"""Image decoding and manifest-driven preprocessing.

Pillow does the decoding and resizing on every source (files, OpenCV frames, picamera2 arrays),
so that one bundle gives the same tensor, and the same answer, whatever delivered the pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._detection import Geometry
from ._errors import DecodeError, InputError
from ._manifest import Preprocess, TensorSpec

__all__ = ["ImagePreprocessor", "decode_image", "load_image"]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
}

MAX_IMAGE_PIXELS = 100_000_000


def load_image(path: str | Path, *, reduce_for: ImagePreprocessor | None = None) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array; DecodeError names the file otherwise.

    ``reduce_for``: a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 of its size that is still
    at least as large as what this preprocessor resizes it to (libjpeg's DCT scaling, Pillow's
    ``Image.draft``): a 1080p photo for a 224x224 model decodes at 480x270, several times faster.
    The tensor then differs from a full decode by resampling noise only (the labels of the
    reference images are the same; tested). Other formats are decoded in full.
    """
    return decode_image(path, reduce_for=reduce_for)[0]


def decode_image(path: str | Path, *, reduce_for: ImagePreprocessor | None = None
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_image`, and the (width, height) of the image in the file (before any reduction)."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DecodeError(f"{p}: {im.width}x{im.height} is larger than {MAX_IMAGE_PIXELS} pixels")
            size = (im.width, im.height)
            if reduce_for is not None and im.format == "JPEG":
                im.draft("RGB", reduce_for.resize_target(im.width, im.height))
            rgb = im.convert("RGB")
            return np.asarray(rgb), size
    except FileNotFoundError as exc:
        raise DecodeError(f"{p}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(f"{p}: not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated or corrupt data as OSError/SyntaxError.
        raise DecodeError(f"{p}: image is corrupt or truncated ({exc})") from exc


class ImagePreprocessor:
    """Turns an RGB uint8 array of any size into the model's input tensor (batch of one)."""

    def __init__(self, pre: Preprocess, spec: TensorSpec) -> None:
        self.pre = pre
        self.spec = spec
        shape = spec.shape
        if len(shape) != 4:
            raise InputError(f"input {spec.name!r} has shape {shape}; image preprocessing needs a 4-D input")
        layout = spec.layout if spec.layout in ("NHWC", "NCHW") else "NHWC"
        self.layout = layout
        if layout == "NHWC":
            h, w, c = shape[1], shape[2], shape[3]
        else:
            c, h, w = shape[1], shape[2], shape[3]
        if pre.size is not None:
            if h > 0 and w > 0 and (int(pre.size[0]), int(pre.size[1])) != (int(w), int(h)):
                # Checked before anything is allocated: a manifest's size, signed or not, must not
                # decide how much memory one frame takes when the model fixes its input.
                raise InputError(f"preprocess size {pre.size[0]}x{pre.size[1]} disagrees with input {spec.name!r}, "
                                 f"whose size is fixed at {w}x{h}")
            w, h = pre.size
        if h <= 0 or w <= 0:
            raise InputError(f"input {spec.name!r} has a dynamic size {shape}; set preprocess size (--resize WxH)")
        self.width, self.height = int(w), int(h)
        self.channels = int(c) if c > 0 else 3
        if self.channels not in (1, 3):
            raise InputError(f"input {spec.name!r} has {self.channels} channels; images give 1 or 3")
        self.dtype = np.dtype(spec.dtype)
        self.q = spec.quantization
        self._raw = (
            self.dtype == np.uint8 and pre.mean is None and pre.std is None and pre.scale == 1.0
        )
        c_ = self.channels
        self._mean = np.asarray(pre.mean if pre.mean is not None else [0.0], dtype=np.float32).reshape(-1)
        self._std = np.asarray(pre.std if pre.std is not None else [1.0], dtype=np.float32).reshape(-1)
        if c_ == 1:
            self._mean, self._std = self._mean[:1], self._std[:1]
        self._resample = _RESAMPLE[pre.interpolation]

    def __call__(self, image: np.ndarray, *, reduced: bool = False) -> np.ndarray:
        """``reduced``: a frame at least twice as large as the size it is resized to is first shrunk
        by the largest integer factor that keeps it at least that large (a box filter, Pillow's
        ``Image.reduce``; the same sizes JPEG draft decoding gives), then resampled: a 1080p frame
        for a 224x224 model takes 1.5 ms instead of 5 ms, its pixels within resampling noise (the
        labels of the reference images are kept). Used for video files, as reduced JPEG decoding is
        for image files."""
        arr = _as_rgb(image)
        resized = self._resize(arr, reduced)
        if self.channels == 1:
            resized = np.asarray(Image.fromarray(resized).convert("L"))[..., None]
        elif self.pre.color == "bgr":
            resized = resized[..., ::-1]
        if self._raw:
            x = resized
        else:
            f = resized.astype(np.float32)
            if self.pre.scale != 1.0:
                f *= np.float32(self.pre.scale)
            f = (f - self._mean) / self._std
            x = self._to_dtype(f)
        if self.layout == "NCHW":
            x = np.transpose(x, (2, 0, 1))
        return np.ascontiguousarray(x[None, ...])

    def geometry(self, src_w: int, src_h: int) -> Geometry:
        """How a ``src_w`` x ``src_h`` image maps onto the model input (exactly as :meth:`_resize`
        does it), so that boxes found in the input can be mapped back to the image."""
        w, h = self.width, self.height
        if src_w <= 0 or src_h <= 0:
            raise InputError(f"image size {src_w}x{src_h} is empty")
        mode = self.pre.resize_mode
        if (src_w, src_h) == (w, h):
            return Geometry(src_w, src_h, 1.0, 1.0)
        if mode == "squash":
            return Geometry(src_w, src_h, w / src_w, h / src_h)
        if mode == "center-crop":
            nw, nh = self._crop_size(src_w, src_h)
            return Geometry(src_w, src_h, nw / src_w, nh / src_h, -float((nw - w) // 2), -float((nh - h) // 2))
        nw, nh = self._fit_size(src_w, src_h)
        return Geometry(src_w, src_h, nw / src_w, nh / src_h, float((w - nw) // 2), float((h - nh) // 2))

    def resize_target(self, src_w: int, src_h: int) -> tuple[int, int]:
        """The size a ``src_w`` x ``src_h`` image is resized to before any crop or padding: the
        least a reduced decode must deliver."""
        mode = self.pre.resize_mode
        if mode == "center-crop":
            return self._crop_size(src_w, src_h)
        if mode == "letterbox":
            return self._fit_size(src_w, src_h)
        return self.width, self.height

    def _crop_size(self, src_w: int, src_h: int) -> tuple[int, int]:
        w, h = self.width, self.height
        s = max(w / src_w, h / src_h)
        return max(w, round(src_w * s)), max(h, round(src_h * s))

    def _fit_size(self, src_w: int, src_h: int) -> tuple[int, int]:
        s = min(self.width / src_w, self.height / src_h)
        return max(1, round(src_w * s)), max(1, round(src_h * s))

    def _to_dtype(self, f: np.ndarray) -> np.ndarray:
        if self.dtype.kind == "f":
            return f.astype(self.dtype, copy=False)
        if self.q is None:
            info = np.iinfo(self.dtype)
            return np.clip(np.rint(f), info.min, info.max).astype(self.dtype)
        info = np.iinfo(self.dtype)
        q = np.rint(f / np.float32(self.q.scale) + np.float32(self.q.zero_point))
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def _resize(self, arr: np.ndarray, reduced: bool = False) -> np.ndarray:
        w, h = self.width, self.height
        src_h, src_w = arr.shape[:2]
        mode = self.pre.resize_mode
        if (src_w, src_h) == (w, h):
            return arr
        im = Image.fromarray(arr)
        if reduced:
            tw, th = self.resize_target(src_w, src_h)
            k = min(src_w // max(1, tw), src_h // max(1, th))
            if k >= 2:
                # the geometry below is computed from the full size: the factor is the same both ways
                im = im.reduce(k)
        if mode == "squash":
            return np.asarray(im.resize((w, h), self._resample))
        if mode == "center-crop":
            nw, nh = self._crop_size(src_w, src_h)
            im = im.resize((nw, nh), self._resample)
            left, top = (nw - w) // 2, (nh - h) // 2
            return np.asarray(im.crop((left, top, left + w, top + h)))
        # letterbox: fit inside, keep aspect ratio, centre, pad the rest with pad_value gray
        nw, nh = self._fit_size(src_w, src_h)
        pad = self.pre.pad_value
        canvas = Image.new("RGB", (w, h), (pad, pad, pad))
        canvas.paste(im.resize((nw, nh), self._resample), ((w - nw) // 2, (h - nh) // 2))
        return np.asarray(canvas)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputError(f"an image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3:
        raise InputError(f"an image must be HxW or HxWxC, got shape {list(image.shape)}")
    c = image.shape[2]
    if c == 1:
        image = np.repeat(image, 3, axis=2)
    elif c == 4:
        image = image[..., :3]
    elif c != 3:
        raise InputError(f"an image must have 1, 3 or 4 channels, got {c}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError("image is empty (0 pixels)")
    if image.dtype != np.uint8:
        if image.dtype.kind == "f" and image.size and float(np.nanmax(image)) <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)
