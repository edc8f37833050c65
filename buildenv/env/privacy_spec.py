"""The privacy section of an environment (SPEC §2): which datasets never show a row to a
human, the differential-privacy budgets spent on them, who may peek or annotate, and the
provenance of synthetic stand-ins. The access room (access/) enforces it."""

# Annotations not postponed: see `buildenv.env.spec_base`.
from typing import Annotated, Literal

from pydantic import Field

from buildenv.env.spec_base import Strict

__all__ = ["PeekPolicy", "Privacy", "PrivacyUnit", "Synthetic", "SyntheticSource"]


class PrivacyUnit(Strict):
    """Who one differential-privacy guarantee protects in a dataset where a person holds several
    rows (e.g. a user's ratings)."""

    key: str
    """Column that identifies a person (e.g. `user_id`)."""
    max_rows: Annotated[int, Field(ge=1)]
    """Rows of one person that private statistics and synthetic data use (the first ones read);
    further rows of that person are left out, so the bound holds whatever the data."""


class PeekPolicy(Strict):
    """Who may look at real rows of a restricted dataset (`buildenv peek`)."""

    actors: list[str] = []
    """Actors allowed to peek, always with a reason that the audit log records first (actor:
    `BUILDENV_ACTOR`, else the CI's user, else the login name). Empty: nobody."""


class SyntheticSource(Strict):
    """The real data a synthetic stand-in was generated from."""

    environment: str
    """Environment whose locked dataset was read."""
    dataset: str
    """Dataset name in that environment."""
    digest: str
    """Locked content digest of the real data read."""


class Synthetic(Strict):
    """Provenance of a synthetic stand-in written by `buildenv synth`: what lets an environment
    un-restrict a dataset its parent restricts (the data is no one's)."""

    uri: str
    """The synthetic file; must be the dataset's uri in this environment."""
    digest: str
    """Content digest of the synthetic file (checked by `buildenv lock` and every build)."""
    source: SyntheticSource
    """The real data it stands in for."""
    method: Literal["mst"]
    """Generator: MST (marginal-based, differentially private) via OpenDP and Private-PGM."""
    epsilon: Annotated[float, Field(gt=0)]
    """Privacy loss spent on the real data to generate it."""
    seed: int
    """Seed of the sampling from the fitted model (the private measurements themselves are
    random by nature and cannot be replayed)."""
    rows: Annotated[int, Field(ge=1)]
    """Rows generated."""


class Privacy(Strict):
    """Which datasets never show a row to a human."""

    restricted: list[str] = []
    """Datasets whose row values never appear in output: aggregates and counts only."""
    min_group_size: Annotated[int, Field(ge=1)] = 10
    """Categories seen fewer times than this are merged into "(other)" in reports."""
    epsilon_budget: (Annotated[float, Field(ge=0)]
                     | dict[str, Annotated[float, Field(ge=0)]] | None) = None
    """Total privacy loss (epsilon) that `buildenv stats` and `buildenv synth` may spend on a
    restricted dataset, over every version of it: one number for each restricted dataset, or a
    mapping dataset -> budget (a restricted dataset not listed gets 0). Absent: none may be
    spent."""
    budget_per_version: list[str] = []
    """Restricted datasets whose every locked version (content digest) gets a fresh budget. Only
    for data where each version holds different people; by default all versions share one."""
    units: dict[str, PrivacyUnit] = {}
    """Per dataset: the column identifying a person and how many rows of one person private
    releases use. A dataset not listed has one row per person."""
    peek: PeekPolicy = PeekPolicy()
    """Who may look at real rows (`buildenv peek`, audited)."""
    synthetic: dict[str, Synthetic] = {}
    """Datasets replaced by synthetic stand-ins (written by `buildenv synth`), with provenance."""
    sandbox: Literal["required", "optional"] = "required"
    """Whether trainings built against restricted datasets must run sandboxed (`required`:
    whatever `[tool.buildenv] sandbox` says, a machine without isolation fails the build), or
    follow the project's sandbox policy (`optional`). No effect without restricted datasets."""
    release: Literal["exact", "dp"] = "exact"
    """How evaluation figures of restricted rows (slices, their counts, metrics and intervals)
    are shown: `exact`, withholding every slice with fewer than `min_group_size` rows; or `dp`,
    released with differential privacy through OpenDP, spending `release_epsilon` from the
    budget once per artifact. Gates always decide on exact figures inside the process."""
    release_epsilon: Annotated[float, Field(gt=0)] = 1.0
    """With `release: dp`: the privacy loss one artifact's released evaluation figures spend
    from the budget of each restricted dataset the evaluation rows read."""
    annotators: list[str] = []
    """Annotators who may be sent examples of restricted datasets (`buildenv tasks`); every
    export is recorded in the audit log. Empty: none."""

    def budget(self, dataset: str) -> float:
        """The epsilon `dataset` may spend in total (0 when none is declared)."""
        if isinstance(self.epsilon_budget, dict):
            return float(self.epsilon_budget.get(dataset, 0.0))
        return float(self.epsilon_budget or 0.0)
