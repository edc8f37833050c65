"""Labeling functions for the weak label set `genre-rules` (environments/exp-weak-genre.yaml):
a handful of genre rules over the catalog, combined by the generative label model with the
annotated `genre-v1` as gold. Each takes a batch of the columns it declares and returns a genre
or None (abstain) per row, vectorised."""

from __future__ import annotations

import numpy as np
import pandas as pd

import buildenv

__all__ = ["big_budget_action", "catalog_genre", "long_is_drama", "old_war_film",
           "short_family_title"]


def _where(condition: pd.Series, genre: str) -> np.ndarray:
    return np.where(condition.fillna(False).to_numpy(dtype=bool), genre, None)


@buildenv.labeling_function(columns=["genre"])
def catalog_genre(batch: pd.DataFrame) -> pd.Series:
    """The catalog's editorial genre: the strongest rule, but the catalog lags relabeling."""
    return batch["genre"]


@buildenv.labeling_function(columns=["runtime_minutes"])
def long_is_drama(batch: pd.DataFrame) -> np.ndarray:
    return _where(batch["runtime_minutes"] > 140, "drama")


@buildenv.labeling_function(columns=["budget_musd"])
def big_budget_action(batch: pd.DataFrame) -> np.ndarray:
    return _where(batch["budget_musd"] > 150, "action")


@buildenv.labeling_function(columns=["runtime_minutes", "release_year"])
def short_family_title(batch: pd.DataFrame) -> np.ndarray:
    return _where((batch["runtime_minutes"] < 85) & (batch["release_year"] >= 2000), "family")


@buildenv.labeling_function(columns=["release_year", "runtime_minutes"])
def old_war_film(batch: pd.DataFrame) -> np.ndarray:
    return _where((batch["release_year"] < 1960) & (batch["runtime_minutes"] > 120), "war")
