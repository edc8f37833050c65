"""The served model judged against the trained one once it is loaded back: permutation
importance (`training.importance`) and parity (`training.parity`), started as early as what
each needs is there, so they overlap the end of the evaluation instead of following it."""

from __future__ import annotations

import time
from typing import Any

from buildenv.training import importance as importance_of
from buildenv.training.beside import Beside
from buildenv.training.parity import Predictions, compare
from buildenv.training.scoring import labelled

__all__ = ["Judged", "parity_of"]


class Judged:
    """The served model judged as soon as it is loaded back: permutation importance on this
    thread once the evaluation rows are read (while the evaluation still scores the trained
    model and its slices), parity in a thread once the evaluation has the trained model's
    outputs. `merge` puts both in the result (parity's diagnostics where the serial order
    has them); when the evaluation fails, both are dropped with it."""

    def __init__(self, served: Any, evaluation: Any, family: Any, env: Any,
                 seed: int, descriptor: dict) -> None:
        self._part: dict = {"diagnostics": []}
        self._served, self._env = served, env
        self._rows: Any = None
        file_format = str(descriptor.get("format"))

        def parity() -> float | None:
            found = evaluation.finished()
            if found is None:
                return None
            rows, trained = found
            started = time.perf_counter()
            parity_of(served, trained, rows, env, file_format, self._part)
            return time.perf_counter() - started

        self._parity = Beside(parity, "parity")
        self.importance, self.seconds = None, 0.0
        rows = self._rows = evaluation.rows_read()
        if rows is not None:
            mark = time.perf_counter()
            self.importance = importance_of.permutation(
                served, rows.frame, rows.labels, seed, family.inputs or [],
                family.is_classifier)
            self.seconds = time.perf_counter() - mark

    def merge(self, result: dict, timings: dict) -> None:
        """Once the evaluation is settled (it succeeded); then the single-row latency, alone,
        when the environment limits it."""
        seconds = self._parity.result()
        assert seconds is not None and self.importance is not None
        timings["importance"] = self.seconds
        timings["parity"] = seconds
        result["diagnostics"].extend(self._part.pop("diagnostics"))
        result.update(self._part)
        result["importance"] = self.importance
        limits = self._env.serving.limits if self._env.serving is not None else None
        if limits is not None and limits.max_latency_ms is not None:
            # deferred: only environments with a latency budget measure it
            from buildenv.training.latency import single_row_latency

            result["latency"] = single_row_latency(self._served, self._rows.frame)


def parity_of(served: Any, outputs: Any, rows: Any, env: Any, file_format: str,
              result: dict) -> None:
    """The served model on the labelled evaluation rows against the trained model's outputs
    on them (computed once, for the metrics too); `file_format`: the saved file's."""
    frame = rows.frame[labelled(rows.labels)]
    if outputs.kind == "classification":
        trained = Predictions(outputs.predicted, outputs.proba)
    else:
        trained = Predictions(None, None, outputs.predicted)
    if served.is_classifier:
        if hasattr(served, "predict_both"):
            labels, proba = served.predict_both(frame)
        else:
            labels = served.predict(frame)
            proba = served.predict_proba(frame) if trained.proba is not None else None
        got = Predictions(labels, proba if trained.proba is not None else None)
    else:
        got = Predictions(None, None, served.predict(frame))
    what = "onnxruntime" if env.serving is not None and env.serving.stack == "onnx" else \
        f"the model loaded from its {file_format} file"
    parity = env.serving.parity
    report, reason = compare(trained, got, parity.atol, parity.rtol, what)
    result["parity"] = report
    if reason:
        result["diagnostics"].append({
            "code": "BE407", "message": reason, "path": None, "line": None, "col": None,
            "severity": "error", "hints": [
                "near-ties are explained and allowed; other differences come from steps whose "
                "converted form computes differently (float32 casts of inputs near a tree "
                "threshold, string handling of missing values)",
                "widen serving.parity only if production accepts the difference"]})
