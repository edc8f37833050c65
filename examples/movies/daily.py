"""The derived dataset `daily_ratings` (environments/exp-weak-genre.yaml): ratings per day,
with the share of thumbs up and of mobile devices. An aggregation: each row counts the ratings
it summarises, and days with fewer than `privacy.min_group_size` ratings would be withheld by
buildenv, so the per-person ratings (restricted) make an aggregate that is not."""

from __future__ import annotations

import pandas as pd

__all__ = ["daily_ratings"]


def daily_ratings(ctx) -> pd.DataFrame:
    df = ctx.read("ratings", columns=["rating_ts", "device", "liked"])
    df["day"] = df["rating_ts"].dt.date
    df["mobile"] = df["device"] == "mobile"
    out = (df.groupby("day", as_index=False)
             .agg(ratings=("liked", "size"), liked_share=("liked", "mean"),
                  mobile_share=("mobile", "mean")))
    return out.sort_values("day").reset_index(drop=True)
