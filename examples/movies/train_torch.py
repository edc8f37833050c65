"""`torch-mlp`: a PyTorch network, returned with its serving contract.

`buildenv.TorchModel(module, inputs=[...], output="logits")` says which columns the module
reads (in that order, as one float32 tensor) and that it returns logits over the label's
classes. The build seeds torch, makes its algorithms deterministic, converts the module to
ONNX (one graph input per column, softmax applied) and checks its operators against
exp-onnx-trees' allow-list; parity and importance are computed with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import torch

import buildenv
from examples.movies.features import describe, load_examples
from examples.movies.mlp import RatingMLP

FEATURES = ["release_year", "runtime_minutes", "budget_musd", "age"]
EPOCHS = 4
BATCH = 256


def train(ctx):
    df = load_examples(ctx)
    x = torch.from_numpy(df[FEATURES].to_numpy(dtype=np.float32, na_value=np.nan))
    y = torch.from_numpy(df["liked"].astype(bool).to_numpy().astype(np.int64))
    mean = torch.nanmean(x, dim=0)
    std = torch.from_numpy(np.nan_to_num(np.nanstd(x.numpy(), axis=0), nan=1.0) + 1e-6)
    module = RatingMLP(mean, std)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(ctx.seed)
    module.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x), generator=order).split(BATCH):
            optimizer.zero_grad()
            loss = loss_fn(module(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    describe(ctx, "mlp", FEATURES, len(df))
    return buildenv.TorchModel(module, inputs=FEATURES, output="logits",
                               classes=[False, True])
