"""MNIST classifiers: a small CNN (default) and the paper code's MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MnistCNN(nn.Module):
    """conv(1→c1,3)-ReLU-pool-conv(c1→c2,3)-ReLU-pool-fc(c2·7·7→hidden)-ReLU-dropout-fc(hidden→10)."""

    def __init__(self, channels: Sequence[int] = (16, 32), hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MnistMLP(nn.Module):
    """The paper code's MLP: 784→128→128→Dropout(0.25)→10 with ReLU."""

    def __init__(self, hidden: Sequence[int] = (128, 128), dropout: float = 0.25):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, 10)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
