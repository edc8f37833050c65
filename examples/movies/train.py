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

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from examples.movies.features import CATEGORICAL, evaluate, load_examples, time_split

NULLABLE_NUMERIC = ["runtime_minutes", "budget_musd"]  # imputed: the environment allows nulls
NUMERIC = ["release_year", "age"]                      # declared non-null
FEATURES = CATEGORICAL + NULLABLE_NUMERIC + NUMERIC


def train(ctx):
    df = load_examples(ctx)
    split = time_split(df, FEATURES)
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
    model.fit(split.X_train, split.y_train)
    evaluate(ctx, model, split, "logistic_regression", FEATURES)
    return model
