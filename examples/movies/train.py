"""`recommender`: will this user like this movie? Served features only.

A logistic regression over what production knows at request time: the movie's
genre, release year, runtime and budget, the user's country, age and plan, and
the device the request comes from. It never reads `critic_score` (training-only
until prod-2026-12), and uses only steps every serving stack of the multiverse
runs, skl2onnx included, so it compiles in every environment.

Evaluation is a time split: the most recent 20% of ratings are the holdout, as
they would be when the model goes live after the snapshot.
"""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

CATEGORICAL = ["genre", "country", "plan", "device"]
NULLABLE_NUMERIC = ["runtime_minutes", "budget_musd"]  # imputed: the environment allows nulls
NUMERIC = ["release_year", "age"]                      # declared non-null
FEATURES = CATEGORICAL + NULLABLE_NUMERIC + NUMERIC
LABEL = "liked"
HOLDOUT_FRACTION = 0.2


def train(ctx):
    ratings = ctx.read("ratings", columns=["user_id", "movie_id", "rating_ts", "device", "liked"])
    movies = ctx.read("movies", columns=["movie_id", "genre", "release_year", "runtime_minutes",
                                         "budget_musd"])
    users = ctx.read("users", columns=["user_id", "country", "age", "plan"])

    df = ratings.merge(movies, on="movie_id", how="inner", validate="many_to_one")
    df = df.merge(users, on="user_id", how="inner", validate="many_to_one")
    df = df.sort_values(["rating_ts", "user_id", "movie_id"], kind="stable").reset_index(drop=True)

    X = _model_inputs(df)
    y = df[LABEL].astype(bool).to_numpy()
    cut = int(len(df) * (1 - HOLDOUT_FRACTION))
    X_train, X_hold, y_train, y_hold = X.iloc[:cut], X.iloc[cut:], y[:cut], y[cut:]

    model = Pipeline([
        ("features", ColumnTransformer([
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
             CATEGORICAL),
            ("nullable_numeric", Pipeline([
                ("impute", SimpleImputer(strategy="median")),
                ("scale", StandardScaler()),
            ]), NULLABLE_NUMERIC),
            ("numeric", StandardScaler(), NUMERIC),
        ])),
        ("classifier", LogisticRegression(C=1.0, max_iter=1000, random_state=ctx.seed)),
    ])
    model.fit(X_train, y_train)

    p_hold = model.predict_proba(X_hold)[:, 1]
    ctx.log_param("model", "logistic_regression")
    ctx.log_param("features", ",".join(FEATURES))
    ctx.log_param("holdout", f"time split, last {HOLDOUT_FRACTION:.0%} of ratings")
    ctx.log_metric("n_train", float(len(X_train)))
    ctx.log_metric("n_holdout", float(len(X_hold)))
    ctx.log_metric("val_auc", float(roc_auc_score(y_hold, p_hold)))
    ctx.log_metric("val_logloss", float(log_loss(y_hold, p_hold, labels=[False, True])))
    ctx.set_holdout(X_hold, y_hold)
    return model


def _model_inputs(df: pd.DataFrame) -> pd.DataFrame:
    """The model's input frame: strings as plain Python objects, numbers as declared."""
    out = df[FEATURES].copy()
    for col in CATEGORICAL:
        out[col] = out[col].astype(object)
    return out
