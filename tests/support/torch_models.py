"""Small PyTorch modules that the torch tests name as ``tests.support.torch_models:FACTORY``."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN()


tiny_cnn.input_shape = (1, 3, 32, 32)  # type: ignore[attr-defined]


def tiny_cnn_10() -> nn.Module:
    """Same layers, ten classes: weights of tiny_cnn do not fit it."""
    return TinyCNN(classes=10)


def needs_args(depth: int) -> nn.Module:
    return TinyCNN(depth)


not_callable = 42
