"""Benchmark slice evaluation: bootstrap intervals on every slice, and model card generation.

    .venv/bin/python bench/bench_evaluation.py [--rows 100000] [--slices 20] [--resamples 1000]

Measured in one process, in the same run (ratios, not absolute times, are what to compare on a
loaded machine):
- fit: the benchmark training, a HistGradientBoostingClassifier (100 iterations) on 4 x --rows
  seeded training rows: the denominator of the goal;
- slices: `score_slices` on --rows evaluation rows, --slices slices of one `by` column plus the
  overall figures, --resamples Poisson bootstrap resamples, every metric (accuracy, log loss,
  ROC AUC) with intervals;
- naive: the same intervals the plain way (resample indices per slice, scikit-learn's metrics
  per resample), timed on --naive-resamples resamples and scaled to --resamples;
- card: `card_facts` + Markdown + CycloneDX of a lineage with those slices.
Goals: slices <= 3 s and <= 0.25 x fit; card <= 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyarrow as pa


def _data(rows: int, slices: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (rows, 8))
    segment = rng.integers(0, slices, rows)
    logit = X @ rng.normal(0, 1, 8) + (segment % 3) * 0.3
    y = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return X, y, segment


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    from buildenv.env.spec import Environment
    from buildenv.training.outputs import Outputs
    from buildenv.training.slice_scores import score_slices

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--naive-resamples", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    X_train, y_train, _ = _data(4 * args.rows, args.slices, 1)
    X, y, segment = _data(args.rows, args.slices, 2)
    started = time.perf_counter()
    model = HistGradientBoostingClassifier(max_iter=100, early_stopping=False,
                                           random_state=0).fit(X_train, y_train)
    fit = time.perf_counter() - started
    proba = model.predict_proba(X)
    outputs = Outputs("classification", y, model.predict(X), proba, [False, True], True)
    env = Environment.model_validate({
        "name": "bench", "datasets": {"rows": {"uri": "rows.parquet", "columns": {
            "segment": {"dtype": "int64"}, "y": {"dtype": "bool"}}}},
        "label": {"dataset": "rows", "column": "y", "classes": [False, True]},
        "evaluation": {"slices": [{"by": "segment"}], "resamples": args.resamples}})
    attributes = pa.table({"segment": segment})
    keep = np.ones(args.rows, bool)
    timings = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        scores = score_slices(env, attributes, [outputs], keep)
        for metric in ("accuracy", "logloss", "roc_auc"):
            scores.interval(0, metric)
        timings.append(time.perf_counter() - started)
    slices = statistics.median(timings)

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for s in range(args.slices):
        rows = np.flatnonzero(segment == s)
        for _ in range(args.naive_resamples):
            pick = rows[rng.integers(0, len(rows), len(rows))]
            accuracy_score(y[pick], outputs.predicted[pick])
            log_loss(y[pick], y_proba=proba[pick], labels=[False, True])
            roc_auc_score(y[pick], proba[pick, 1])
    naive = (time.perf_counter() - started) * args.resamples / args.naive_resamples

    lineage = _lineage(scores, env)
    from buildenv.compile.card import card_facts, markdown
    from buildenv.compile.cyclonedx import cyclonedx_card
    from buildenv.core.project import TrainingConfig

    config = TrainingConfig(entry="train.py:train", description="bench", owners=["me"])
    res = type("R", (), {"env": env})()
    card_times = []
    for _ in range(max(args.repeats, 5)):
        started = time.perf_counter()
        facts = card_facts(lineage, config, res)  # type: ignore[arg-type]
        markdown(facts)
        cyclonedx_card(facts, "00000000-0000-0000-0000-000000000000", "1970-01-01T00:00:00Z")
        card_times.append(time.perf_counter() - started)
    card = statistics.median(card_times)

    print(f"rows {args.rows:,}, slices {args.slices}, resamples {args.resamples:,}")
    print("| measure | seconds | ratio | goal |")
    print("| --- | --- | --- | --- |")
    print(f"| fit (benchmark training, {4 * args.rows:,} rows) | {fit:.2f} | 1.00 | |")
    print(f"| slices + intervals | {slices:.2f} | {slices / fit:.2f} x fit | <= 3 s, "
          "<= 0.25 x fit |")
    print(f"| naive per-slice bootstrap (scaled) | {naive:.1f} | {naive / slices:.0f} x slices | |")
    print(f"| model card (md + json) | {card * 1000:.1f} ms | | <= 100 ms |")


def _lineage(scores, env) -> dict:
    from buildenv.training.slice_view import exact_view

    view = exact_view(scores, 0, env, False)
    overall = view.pop("overall")
    return {"training": "bench", "entry": "train.py:train", "environment": "bench",
            "environment_chain": ["bench"], "environment_digest": "sha256:" + "0" * 64,
            "code_digest": "sha256:" + "1" * 64, "cache_key": "sha256:" + "2" * 64, "seed": 0,
            "buildenv_version": "bench", "inputs": [f"x{i}" for i in range(8)], "ops": [],
            "model_class": "sklearn.ensemble.HistGradientBoostingClassifier",
            "datasets": {"rows": {"digest": "sha256:" + "3" * 64, "rows": 500_000,
                                  "uri": "rows.parquet"}},
            "label": {"dataset": "rows", "column": "y", "classes": [False, True]},
            "evaluation": {"rows": overall["rows"], "method": "dataset",
                           "metrics": {m: f["value"] for m, f in overall["metrics"].items()},
                           "intervals": {m: f.get("interval") for m, f in
                                         overall["metrics"].items()}, **view}}


if __name__ == "__main__":
    main()
