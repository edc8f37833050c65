"""What every movie training shares: the joined training rows and the model inputs.

Reads go through `ctx` with literal columns, so `buildenv check` verifies them here too
(the checker follows the repository modules a training imports). `ctx.read` returns training
rows only: the environment holds out its evaluation rows (`evaluation:` in
environments/prod-2026-06.yaml) and the build scores every model on them.
"""

from __future__ import annotations

import pandas as pd

CATEGORICAL = ["genre", "country", "plan", "device"]
LABEL = "liked"


def load_examples(ctx, with_critic_score: bool = False) -> pd.DataFrame:
    """One row per training rating, joined with its movie and user, oldest first."""
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


def inputs(df: pd.DataFrame, features: list[str]) -> tuple[pd.DataFrame, object]:
    """Model inputs as serving sends them (strings as plain Python objects) and the label."""
    X = df[features].copy()
    for col in CATEGORICAL:
        X[col] = X[col].astype(object)
    return X, df[LABEL].astype(bool).to_numpy()


def describe(ctx, name: str, features: list[str], rows: int) -> None:
    """What was trained, for the run's params (the environment computes the metrics)."""
    ctx.log_param("model", name)
    ctx.log_param("features", ",".join(features))
    ctx.log_metric("n_train", float(rows))
