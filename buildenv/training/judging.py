"""The served model judged against the trained one once it is loaded back: permutation
importance (`training.importance`) and parity (`training.parity`), started as early as what
each needs is there, so they overlap the end of the evaluation instead of following it.
Parity's own predictions (the served model on the labelled evaluation rows) need only the
rows: they run beside importance and the evaluation, and only the comparison waits for the
trained model's outputs."""

from __future__ import annotations

import time
from typing import Any

from buildenv.training import importance as importance_of
from buildenv.training.beside import Beside
from buildenv.training.parity import Predictions, compare
from buildenv.training.scoring import labelled

__all__ = ["Ahead", "Judged", "parity_of"]


class Judged:
    """The served model judged as soon as it is loaded back: permutation importance on this
    thread once the evaluation rows are read (while the evaluation still scores the trained
    model and its slices), parity in a thread: the served model's predictions on the rows
    (`Ahead`) at once, their comparison once the evaluation has the trained model's outputs.
    `merge` puts both in the result (parity's diagnostics where the serial order has them);
    when the evaluation fails, both are dropped with it."""

    def __init__(self, served: Any, evaluation: Any, family: Any, env: Any,
                 seed: int, descriptor: dict) -> None:
        self._part: dict = {"diagnostics": []}
        self._served, self._env = served, env
        self._rows: Any = None
        file_format = str(descriptor.get("format"))

        def parity() -> float | None:
            read = evaluation.rows_read()
            started = time.perf_counter()
            early = Ahead(served, read) if read is not None else None
            spent = time.perf_counter() - started
            found = evaluation.finished()
            if found is None:
                return None
            rows, trained = found
            started = time.perf_counter()
            parity_of(served, trained, rows, env, file_format, self._part,
                      early if rows is read else None)
            return spent + time.perf_counter() - started

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


class Ahead:
    """The served model's calls parity makes on the labelled evaluation rows, made before the
    trained model's outputs are known, in parity's order: each call's value or exception is
    kept, and `take` returns it (raises it) only when parity then makes that call, so what
    parity reports and raises is what calling the model at that point gives. The
    probabilities are asked ahead only of a model that says it has them (`has_proba`)."""

    def __init__(self, served: Any, rows: Any, make: bool = True) -> None:
        self.frame = rows.frame[labelled(rows.labels)]
        self._made: dict[str, tuple[Any, BaseException | None]] = {}
        if not make:
            return
        if not served.is_classifier:
            self._make("predict", served.predict)
        elif hasattr(served, "predict_both"):
            self._make("predict_both", served.predict_both)
        else:
            self._make("predict", served.predict)
            if getattr(served, "has_proba", False):
                self._make("predict_proba", served.predict_proba)

    def _make(self, name: str, call: Any) -> None:
        try:
            self._made[name] = (call(self.frame), None)
        except Exception as exc:  # raised again only if parity makes this call
            self._made[name] = (None, exc)

    def take(self, name: str, call: Any) -> Any:
        """`call(frame)`'s value, made ahead when it was."""
        if name not in self._made:
            return call(self.frame)
        value, error = self._made.pop(name)
        if error is not None:
            raise error
        return value


def parity_of(served: Any, outputs: Any, rows: Any, env: Any, file_format: str,
              result: dict, early: Ahead | None = None) -> None:
    """The served model on the labelled evaluation rows against the trained model's outputs
    on them (computed once, for the metrics too); `file_format`: the saved file's. `early`:
    the served model's predictions made ahead on these rows."""
    ahead = early if early is not None else Ahead(served, rows, make=False)
    if outputs.kind == "classification":
        trained = Predictions(outputs.predicted, outputs.proba)
    else:
        trained = Predictions(None, None, outputs.predicted)
    if served.is_classifier:
        if hasattr(served, "predict_both"):
            labels, proba = ahead.take("predict_both", served.predict_both)
        else:
            labels = ahead.take("predict", served.predict)
            proba = ahead.take("predict_proba", served.predict_proba) \
                if trained.proba is not None else None
        got = Predictions(labels, proba if trained.proba is not None else None)
    else:
        got = Predictions(None, None, ahead.take("predict", served.predict))
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
