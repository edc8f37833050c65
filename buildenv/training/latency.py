"""Single-row prediction latency of the served model, as `serving.limits.max_latency_ms` judges it.

Measured in the training process right after the model was saved, on the model loaded back the
way serving loads it (onnxruntime for the `onnx` stack, skops for `sklearn`), one evaluation
row per call, as a request of one row would be answered. Up to `ROWS` rows, chosen evenly
across the evaluation rows, after a few warm-up calls; the p99 and the median are reported in
milliseconds. A measurement, not an input: it varies between runs and machines.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["ROWS", "WARMUP", "single_row_latency"]

ROWS = 1000
WARMUP = 20


def single_row_latency(served: Any, frame: Any) -> dict:
    n = len(frame)
    if n == 0:
        return {"rows": 0}
    picks = np.unique(np.linspace(0, n - 1, num=min(ROWS, n)).astype(int))
    columns = list(served.inputs) or list(frame.columns)
    rows = [frame.iloc[[i]][columns] for i in picks]
    calls = [lambda r=r: served.predict(r) for r in rows]
    for call in calls[:WARMUP]:
        call()
    seconds = []
    for call in calls:
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    ms = np.asarray(seconds) * 1000.0
    return {"rows": len(ms), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "median_ms": round(float(np.median(ms)), 3)}
