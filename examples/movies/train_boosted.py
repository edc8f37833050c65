"""`boosted`: gradient-boosted trees over the recommender's served features.

Same inputs as `recommender` (no `critic_score`), but a
`HistGradientBoostingClassifier`, which picks up what a linear model cannot:
the age x genre interaction and the runtime sweet spot. The serving image of
prod-2026-06 and prod-2026-09 (and their branches) cannot run tree ensembles,
so compiling against them is refused because the fitted model contains an op
outside `serving.ops`; prod-2026-12 allows it and there it builds.

Trees need neither scaling nor imputation: categories are ordinal-encoded and
declared categorical, and missing numbers go down the learned branch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

CATEGORICAL = ["genre", "country", "plan", "device"]
NUMERIC = ["runtime_minutes", "budget_musd", "release_year", "age"]
FEATURES = CATEGORICAL + NUMERIC
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
            ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value",
                                           unknown_value=np.nan), CATEGORICAL),
            ("numeric", "passthrough", NUMERIC),
        ])),
        ("classifier", HistGradientBoostingClassifier(
            learning_rate=0.08, max_iter=150, max_leaf_nodes=15, min_samples_leaf=40,
            l2_regularization=1.0, early_stopping=False,
            categorical_features=list(range(len(CATEGORICAL))), random_state=ctx.seed,
        )),
    ])
    model.fit(X_train, y_train)

    p_hold = model.predict_proba(X_hold)[:, 1]
    ctx.log_param("model", "hist_gradient_boosting")
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
