"""Online prediction on a loaded model, apart from HTTP: a request's batch split to fit the
model's batch dimension, and image classification with the device's own pre/postprocessing."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ._errors import BadRequestError, UnprocessableError
from ._imagein import decode_image
from ._inference import LoadedModel

__all__ = ["classify_image", "run_items"]


async def run_items(lm: LoadedModel, tensors: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Send a request's batch to the batcher: whole when the model's batch is dynamic, else item by
    item (a fixed-batch-1 model), and join the answers back along the batch axis."""
    first = lm.model.manifest.inputs[0].shape
    fixed = first[0] if first else -1
    if fixed == -1 or fixed == batch:
        return await lm.infer(tensors)
    if fixed != 1:
        raise BadRequestError(f"{lm.name} takes a batch of exactly {fixed}, got {batch}", code="bad_shape")
    parts = await asyncio.gather(*(lm.infer([t[i:i + 1] for t in tensors]) for i in range(batch)))
    return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]


async def classify_image(lm: LoadedModel, data: bytes, top_k: int) -> dict[str, Any]:
    """The top-k labels of an encoded image (a detector's ``detections``: label, score, box
    [x1, y1, x2, y2] in the image's pixels, best first), with the record's latency breakdown and path."""
    model = lm.model
    if model.manifest.preprocess.kind != "image":
        raise UnprocessableError(f"{lm.name} takes {model.manifest.task} rows, not images; use /infer",
                                 code="not_an_image_model")
    t0 = time.perf_counter()
    pre = model.image_preprocessor  # its size, from the manifest or else the model's input
    target = (pre.width, pre.height) if pre is not None else model.manifest.preprocess.size
    image = await run_in_threadpool(decode_image, data, target)  # huge JPEGs: draft
    tensors = await run_in_threadpool(model.preprocess, image)
    t1 = time.perf_counter()
    outs = await lm.infer(tensors)
    t2 = time.perf_counter()
    # a detector's boxes in pixels of the image as sent (width, height), as on the device: the size
    # its header declares, since a huge JPEG is decoded reduced
    size = (int(image.shape[1]), int(image.shape[0]))
    pred = model.postprocess(outs, image_size=_sent_size(data, size) if model.manifest.task == "detection" else size)
    top: list[dict[str, Any]] | None = None
    if pred.scores is not None:
        scores = pred.scores
        k = min(top_k, scores.size)
        idx = np.argsort(-scores, kind="stable")[:k]
        labels = model.labels
        top = [{"label": labels[i] if i < len(labels) else str(int(i)), "score": round(float(scores[i]), 6),
                "index": int(i)} for i in idx]
    t3 = time.perf_counter()
    return {"model": {"name": lm.name, "version": lm.version}, "top_k": top, "values": pred.values,
            "detections": pred.detections,
            "latency_ms": {"preprocess": round((t1 - t0) * 1000, 3), "inference": round((t2 - t1) * 1000, 3),
                           "postprocess": round((t3 - t2) * 1000, 3), "total": round((t3 - t0) * 1000, 3)},
            "backend": model.backend_name, "path": "cloud"}


def _sent_size(data: bytes, decoded: tuple[int, int]) -> tuple[int, int]:
    """(width, height) the image's header declares (reads the header only)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return decoded
    return int(w), int(h)
