"""A tiny YOLO-style detector for the converter tests, named as ``tests.support.tiny_detector:tiny_detector``.

Input ``[1, 3, 64, 64]`` (RGB 0-1), output ``[1, 4 + classes, 64]``: for each cell of an 8 x 8 grid
a box (cx, cy, w, h in input pixels) and one sigmoid score per class, no NMS: the layout of the
Ultralytics head the runtime decodes as ``yolo``. Random weights with a fixed seed; the class head
is a Linear over the cell features, so it exports as a MatMul (which dynamic quantization takes).
"""

from __future__ import annotations

import torch
from torch import nn

CLASSES = 2
SIZE = 64
GRID = 8


class TinyDetector(nn.Module):
    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(16, 4 + classes)
        stride = SIZE / GRID
        ys, xs = torch.meshgrid(torch.arange(GRID, dtype=torch.float32), torch.arange(GRID, dtype=torch.float32),
                                indexing="ij")
        self.register_buffer("cx", ((xs.reshape(-1) + 0.5) * stride).reshape(1, 1, -1))
        self.register_buffer("cy", ((ys.reshape(-1) + 0.5) * stride).reshape(1, 1, -1))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # [1, 16, 8, 8]
        cells = f.flatten(2).transpose(1, 2)  # [1, 64, 16]
        t = self.head(cells).transpose(1, 2)  # [1, 4 + classes, 64]
        cx = self.cx + torch.tanh(t[:, 0:1]) * self.stride
        cy = self.cy + torch.tanh(t[:, 1:2]) * self.stride
        w = self.stride * (1.0 + 3.0 * torch.sigmoid(t[:, 2:3]))
        h = self.stride * (1.0 + 3.0 * torch.sigmoid(t[:, 3:4]))
        scores = torch.sigmoid(t[:, 4:])
        return torch.cat([cx, cy, w, h, scores], dim=1)


def tiny_detector() -> nn.Module:
    torch.manual_seed(0)
    m = TinyDetector()
    with torch.no_grad():
        # Fitted once on the shared photos: the random features are tiny, so the head is scaled up
        # and centred, which gives boxes of varied size and a few confident cells per image.
        m.head.weight *= 300.0
        m.head.bias.copy_(torch.tensor(_BIAS))
    return m.eval()


_BIAS = (2.707, 1.384, -3.111, -1.709, 11.395, -0.187)


tiny_detector.input_shape = (1, 3, SIZE, SIZE)  # type: ignore[attr-defined]
