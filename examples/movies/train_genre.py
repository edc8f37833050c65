"""`genre-tagger`: a title's editorial genre from what ingest knows, trained on annotations.

The environment's label is a label set (Label Studio annotations, resolved by majority and,
under taxonomy v2, reused from v1 through the SSSOM mapping): `ctx.read("movies", ...)`
returns only the titles with a usable label, held-out titles removed, and `ctx.labels()` the
genre of each of those rows, in the same order. It never reads the catalog's own `genre`
column (that would be the answer). Release year, runtime and budget carry real but weak
signal (war films run long, documentaries are cheap, crime dramas run longer than dramas), so
expect an accuracy above the majority class's share, far from perfect.
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["release_year", "runtime_minutes", "budget_musd"]


def train(ctx):
    movies = ctx.read("movies", columns=["release_year", "runtime_minutes", "budget_musd"])
    genre = ctx.labels()
    model = Pipeline([
        ("features", ColumnTransformer([
            ("numeric", Pipeline([
                ("impute", SimpleImputer(strategy="median")),
                ("scale", StandardScaler()),
            ]), FEATURES),
        ])),
        ("classifier", LogisticRegression(C=1.0, max_iter=2000, random_state=ctx.seed)),
    ])
    model.fit(movies[FEATURES], genre)
    ctx.log_param("model", "multinomial_logistic_regression")
    ctx.log_param("features", ",".join(FEATURES))
    ctx.log_metric("n_train", float(len(movies)))
    return model
