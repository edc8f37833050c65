"""A small PyTorch network over numeric columns, for `torch-mlp` (train_torch.py).

Kept in its own module, apart from the training: a model class defined in the training file
would make the training module a dependency of anyone loading the native model. Normalisation
and missing values are the module's business (buffers fitted on the training rows), so the
served ONNX graph takes raw columns.
"""

from __future__ import annotations

import torch
from torch import nn


class RatingMLP(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int = 32,
                 classes: int = 2) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.layers = nn.Sequential(
            nn.Linear(len(mean), hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        z = torch.where(torch.isnan(z), torch.zeros_like(z), z)  # a missing value: the mean
        return self.layers(z)
