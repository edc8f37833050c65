"""`recommender`: will this user like this movie? Served features only.

A logistic regression over what production knows at request time: the movie's
genre, release year, runtime and budget, the user's country, age and plan, and
the device the request comes from. It never reads `critic_score` (training-only
until prod-2026-12), and uses only steps every serving stack of the multiverse
runs, skl2onnx included, so it compiles in every environment.

It fits on every row `ctx.read` returns and returns the model: the environment
holds out 20% of the ratings (by a hash of user and movie) and the build scores
the model on them; promotion compares candidates on the same rows.
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from examples.movies.features import CATEGORICAL, describe, inputs, load_examples

NULLABLE_NUMERIC = ["runtime_minutes", "budget_musd"]  # imputed: the environment allows nulls
NUMERIC = ["release_year", "age"]                      # declared non-null
FEATURES = CATEGORICAL + NULLABLE_NUMERIC + NUMERIC


def train(ctx):
    df = load_examples(ctx)
    X, y = inputs(df, FEATURES)
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
    model.fit(X, y)
    describe(ctx, "logistic_regression", FEATURES, len(X))
    return model
