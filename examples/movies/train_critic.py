"""`critic-aware`: the recommender plus the movie's critic score as a model input.

Critic scores are known only some days after release, so until prod-2026-12 the
serving stack does not have them (`critic_score: {serving: false}`): compiling
this training against prod-2026-06, prod-2026-09 or their branches is refused
when the fitted model is verified (BE401). prod-2026-12's serving stack fetches the score at
request time (null for titles not reviewed yet, which the imputer covers), and
there it builds, with a better evaluation AUC than `recommender`.
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from examples.movies.features import CATEGORICAL, describe, inputs, load_examples

NULLABLE_NUMERIC = ["runtime_minutes", "budget_musd", "critic_score"]
NUMERIC = ["release_year", "age"]
FEATURES = CATEGORICAL + NULLABLE_NUMERIC + NUMERIC


def train(ctx):
    df = load_examples(ctx, with_critic_score=True)
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
    describe(ctx, "logistic_regression_with_critic_score", FEATURES, len(X))
    return model
