"""What every movie training shares: the joined examples, the time split, the evaluation.

Reads go through `ctx` with literal columns, so `buildenv check` verifies them here too
(the checker follows the repository modules a training imports).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

CATEGORICAL = ["genre", "country", "plan", "device"]
LABEL = "liked"
HOLDOUT_FRACTION = 0.2


@dataclass
class Split:
    X_train: pd.DataFrame
    X_hold: pd.DataFrame
    y_train: object
    y_hold: object


def load_examples(ctx, with_critic_score: bool = False) -> pd.DataFrame:
    """One row per rating, joined with its movie and user, oldest first."""
    ratings = ctx.read("ratings", columns=["user_id", "movie_id", "rating_ts", "device", "liked"])
    if with_critic_score:
        movies = ctx.read("movies", columns=["movie_id", "genre", "release_year",
                                             "runtime_minutes", "budget_musd", "critic_score"])
    else:
        movies = ctx.read("movies", columns=["movie_id", "genre", "release_year",
                                             "runtime_minutes", "budget_musd"])
    users = ctx.read("users", columns=["user_id", "country", "age", "plan"])
    df = ratings.merge(movies, on="movie_id", how="inner", validate="many_to_one")
    df = df.merge(users, on="user_id", how="inner", validate="many_to_one")
    return df.sort_values(["rating_ts", "user_id", "movie_id"], kind="stable").reset_index(
        drop=True)


def time_split(df: pd.DataFrame, features: list[str]) -> Split:
    """The most recent ratings are the holdout, as they are when the model goes live."""
    X = df[features].copy()
    for col in CATEGORICAL:
        X[col] = X[col].astype(object)  # plain Python strings: what serving sends
    y = df[LABEL].astype(bool).to_numpy()
    cut = int(len(df) * (1 - HOLDOUT_FRACTION))
    return Split(X.iloc[:cut], X.iloc[cut:], y[:cut], y[cut:])


def evaluate(ctx, model, split: Split, name: str, features: list[str]) -> None:
    """Log the holdout metrics the promotion gates use, and hand the holdout to the build."""
    p_hold = model.predict_proba(split.X_hold)[:, 1]
    ctx.log_param("model", name)
    ctx.log_param("features", ",".join(features))
    ctx.log_param("holdout", f"time split, last {HOLDOUT_FRACTION:.0%} of ratings")
    ctx.log_metric("n_train", float(len(split.X_train)))
    ctx.log_metric("n_holdout", float(len(split.X_hold)))
    ctx.log_metric("val_auc", float(roc_auc_score(split.y_hold, p_hold)))
    ctx.log_metric("val_logloss", float(log_loss(split.y_hold, p_hold, labels=[False, True])))
    ctx.set_holdout(split.X_hold, split.y_hold)
