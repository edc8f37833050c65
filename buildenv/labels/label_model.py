"""From labeling functions' votes to one label per row: majority, or a generative model.

The label matrix has one row per dataset row and one column per function, holding the index of
the class voted for or -1 (abstain). Rows with the same votes are the same to either model, so
both work on the distinct rows (**patterns**) weighted by how often each occurs: ten functions
over ten million rows rarely make more than a few thousand patterns.

- **majority**: the class with the most votes; a tie between classes, or no vote, abstains.
- **generative** (Dawid & Skene, 1979, "Maximum likelihood estimation of observer error-rates
  using the EM algorithm"; the model behind Snorkel's label model, with a full confusion
  matrix per function): every function j has a confusion matrix theta_j[c, l] = P(j answers l
  | true class c), where an answer is a class or abstaining (as in Snorkel: a function that
  votes one class or abstains is informative only through when it abstains), and the classes
  a prior pi; the model is fitted to the rows with a vote. EM starts
  from each row's vote shares (their eq. 3.1), then alternates the M-step (pi and theta from
  the current class probabilities T, each theta cell smoothed by `smoothing` pseudo-votes:
  0.01, small on purpose -- a whole pseudo-vote per cell pulls a function that votes alone on
  most rows towards a uniform confusion matrix, one EM step at a time, over many classes) and
  the E-step (T[i, c] proportional to pi[c] * prod_j theta_j[c, vote_ij]) until no parameter
  moves by more than `tolerance`, or `max_iterations`. A row's label is the most probable class
  (a tie abstains); rows without votes abstain. With a gold label set the prior is fixed to
  the class shares of its examples the dataset holds (add-one smoothed) instead of estimated. There is no random step: the same
  matrix gives the same arrays, bit for bit, so no seed is needed.

`dawid_skene` is the algorithm on observations (item, observer, class, count) -- the form of
the published example, where one observer rated every patient three times -- and `generative`
applies it to a label matrix, abstaining as answer K (`outcomes` K + 1). The fitted parameters are arrays (`FittedModel.table`), stored as
Parquet, never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["SMOOTHING", "EmFit", "FittedModel", "Patterns", "dawid_skene", "generative",
           "generative_patterns", "majority", "majority_patterns", "patterns"]

# A change to either model's labels for the same votes bumps its number in
# `data.lock.computed_labels.MODEL_VERSIONS`.

SMOOTHING = 0.01  # pseudo-votes per confusion cell (see the module)


@dataclass
class Patterns:
    """The distinct rows of a label matrix: `rows` (P, J), `counts` (P,), `inverse` (N,)
    mapping each matrix row to its pattern."""

    rows: np.ndarray
    counts: np.ndarray
    inverse: np.ndarray


def patterns(matrix: np.ndarray, classes: int) -> Patterns:
    """Distinct rows, by one sort of their votes packed into an integer when they fit."""
    n, j = matrix.shape
    if n == 0:
        return Patterns(np.zeros((0, j), matrix.dtype), np.zeros(0, np.int64),
                        np.zeros(0, np.int64))
    base = classes + 1
    if j and base ** j <= max(n, 1 << 16):
        return _counted(matrix, base)
    if j and base ** j < 2 ** 62:
        packed = np.zeros(n, np.int64)
        for column in range(j):
            packed *= base
            packed += matrix[:, column].astype(np.int64) + 1
        _, first, inverse, counts = np.unique(packed, return_index=True,
                                                   return_inverse=True, return_counts=True)
        return Patterns(matrix[first], counts.astype(np.int64), inverse.astype(np.int64))
    rows, inverse, counts = np.unique(matrix, axis=0, return_inverse=True, return_counts=True)
    return Patterns(rows, counts.astype(np.int64), inverse.reshape(-1).astype(np.int64))


def _counted(matrix: np.ndarray, base: int) -> Patterns:
    """`patterns` when every possible row fits in a table no longer than the matrix: the
    packed rows are counted (no sort), the same patterns in the same order as `np.unique`."""
    n, j = matrix.shape
    packed = np.zeros(n, np.int64)
    for column in range(j):
        packed *= base
        packed += matrix[:, column]
        packed += 1
    counts = np.bincount(packed, minlength=base ** j)
    present = np.flatnonzero(counts)
    at = np.cumsum(counts > 0) - 1
    rows = np.empty((len(present), j), matrix.dtype)
    rest = present.copy()
    for column in range(j - 1, -1, -1):
        rows[:, column] = rest % base - 1
        rest //= base
    return Patterns(rows, counts[present].astype(np.int64), at[packed].astype(np.int64))


def _vote_counts(rows: np.ndarray, classes: int) -> np.ndarray:
    """(P, K): how many functions vote for each class in each pattern."""
    counts = np.zeros((rows.shape[0], classes), np.int64)
    index = np.arange(rows.shape[0])
    for column in range(rows.shape[1]):
        votes = rows[:, column].astype(np.int64)
        valid = votes >= 0
        np.add.at(counts, (index[valid], votes[valid]), 1)
    return counts


def _decide(scores: np.ndarray, voted: np.ndarray) -> np.ndarray:
    """Per pattern: the index of the best score; -1 for ties and for patterns without votes."""
    if scores.shape[0] == 0:
        return np.zeros(0, np.int64)
    best = scores.argmax(axis=1)
    top = scores[np.arange(scores.shape[0]), best]
    tied = (scores == top[:, None]).sum(axis=1) > 1
    decided: np.ndarray = np.where(voted & ~tied, best, -1).astype(np.int64)
    return decided


def majority(matrix: np.ndarray, classes: int, found: Patterns | None = None) -> np.ndarray:
    """Each row's class index by majority vote; -1 for a tie or no vote. `found`: the
    matrix's patterns, when the caller has them."""
    found = found if found is not None else patterns(matrix, classes)
    rows: np.ndarray = majority_patterns(found, classes)[found.inverse]
    return rows


def majority_patterns(found: Patterns, classes: int) -> np.ndarray:
    """`majority`'s decision for each pattern (the rows follow it through `found.inverse`)."""
    counts = _vote_counts(found.rows, classes)
    return _decide(counts.astype(np.float64), counts.sum(axis=1) > 0)


@dataclass
class EmFit:
    prior: np.ndarray  # (K,)
    confusion: np.ndarray  # (J, K, outcomes): P(observer j says l | true class c)
    posterior: np.ndarray  # (items, K)
    iterations: int
    converged: bool


def dawid_skene(item: np.ndarray, observer: np.ndarray, label: np.ndarray, count: np.ndarray,
                items: int, observers: int, classes: int, *, weight: np.ndarray | None = None,
                prior: np.ndarray | None = None, smoothing: float = 0.0,
                max_iterations: int = 100, tolerance: float = 1e-6,
                outcomes: int | None = None) -> EmFit:
    """Dawid-Skene EM on observations: `observer` said `label` about `item`, `count` times.
    `weight`: how many identical items each item stands for (default 1). `prior`: a fixed
    class prior (default: estimated). `outcomes`: how many answers an observer can give
    (default `classes`); labels from `classes` on (an abstain) are modelled like any answer
    but give no start share. Every item must have at least one label below `classes`."""
    answers = classes if outcomes is None else outcomes
    w = np.ones(items) if weight is None else weight.astype(np.float64)
    c = count.astype(np.float64)
    cell = observer.astype(np.int64) * answers + label.astype(np.int64)
    posterior = np.zeros((items, classes))
    said = label < classes
    np.add.at(posterior, (item[said], label[said]), c[said])  # eq. 3.1: each item's vote shares
    posterior /= posterior.sum(axis=1, keepdims=True)
    fixed = None if prior is None else prior / prior.sum()
    last_prior, last_confusion = None, None
    iterations, converged = 0, False
    est_prior, confusion = np.zeros(classes), np.zeros((observers, classes, answers))
    while iterations < max_iterations:
        iterations += 1
        weighted = posterior * w[:, None]
        est_prior = fixed if fixed is not None else weighted.sum(axis=0) / w.sum()
        for k in range(classes):  # M-step: confusion[:, k, :] from the items' class-k mass
            confusion[:, k, :] = np.bincount(
                cell, weights=weighted[item, k] * c, minlength=observers * answers
            ).reshape(observers, answers) + smoothing
        totals = confusion.sum(axis=2, keepdims=True)
        confusion = np.divide(confusion, totals, out=np.zeros_like(confusion),
                              where=totals > 0)
        with np.errstate(divide="ignore"):
            log_confusion = np.log(confusion)
            log_prior = np.log(est_prior)
        logs = np.empty((items, classes))
        for k in range(classes):  # E-step
            terms = c * log_confusion[observer, k, label]
            terms = np.where(c > 0, terms, 0.0)  # 0 * log 0 is no evidence
            logs[:, k] = log_prior[k] + np.bincount(item, weights=terms, minlength=items)
        top = logs.max(axis=1, keepdims=True)
        impossible = ~np.isfinite(top[:, 0])
        top[impossible] = 0.0
        posterior = np.exp(logs - top)
        sums = posterior.sum(axis=1, keepdims=True)
        posterior = np.divide(posterior, sums, out=np.zeros_like(posterior), where=sums > 0)
        posterior[impossible] = est_prior
        if last_prior is not None and last_confusion is not None and max(
                float(np.abs(est_prior - last_prior).max()),
                float(np.abs(confusion - last_confusion).max())) < tolerance:
            converged = True
            break
        last_prior, last_confusion = est_prior.copy(), confusion.copy()
    return EmFit(est_prior, confusion, posterior, iterations, converged)


@dataclass
class FittedModel:
    """A label model's parameters (none for majority), as arrays."""

    kind: str
    classes: list[str]
    functions: list[str]
    prior: np.ndarray | None = None
    confusion: np.ndarray | None = None
    iterations: int = 0
    converged: bool = True

    def table(self) -> pa.Table:
        """Rows (function, class, vote, probability): the prior has no function and no vote."""
        fn: list[str | None] = []
        cls: list[str] = []
        vote: list[str | None] = []
        prob: list[float] = []
        if self.prior is not None:
            for k, name in enumerate(self.classes):
                fn.append(None)
                cls.append(name)
                vote.append(None)
                prob.append(float(self.prior[k]))
        if self.confusion is not None:
            for j, function in enumerate(self.functions):
                for k, name in enumerate(self.classes):
                    for v, voted in enumerate([*self.classes, None]):  # None: abstains
                        fn.append(function)
                        cls.append(name)
                        vote.append(voted)
                        prob.append(float(self.confusion[j, k, v]))
        return pa.table({"function": pa.array(fn, pa.string()), "class": pa.array(cls, pa.string()),
                         "vote": pa.array(vote, pa.string()), "probability": pa.array(prob)})

    def accuracies(self) -> dict[str, float]:
        """Each function's estimated accuracy: P(its vote is right | it votes), under the
        fitted prior."""
        if self.prior is None or self.confusion is None:
            return {}
        k = len(self.classes)
        right = np.einsum("jkk->jk", self.confusion[:, :, :k])  # P(votes c | c)
        votes = self.confusion[:, :, :k].sum(axis=2)  # P(votes at all | c)
        out = {}
        for j, f in enumerate(self.functions):
            voting = float((self.prior * votes[j]).sum())
            out[f] = float((self.prior * right[j]).sum()) / voting if voting > 0 else 0.0
        return out


def generative(matrix: np.ndarray, classes: list[str], functions: list[str], *,
               prior: np.ndarray | None = None, smoothing: float = SMOOTHING,
               max_iterations: int = 100, tolerance: float = 1e-6,
               found: Patterns | None = None) -> tuple[np.ndarray, FittedModel]:
    """Each row's class index under a Dawid-Skene model fitted to the matrix by EM (-1 for
    rows without votes and for ties), and the fitted model. `found`: the matrix's patterns,
    when the caller has them."""
    found = found if found is not None else patterns(matrix, len(classes))
    decided, model = generative_patterns(found, classes, functions, prior=prior,
                                         smoothing=smoothing, max_iterations=max_iterations,
                                         tolerance=tolerance)
    labels: np.ndarray = decided[found.inverse]
    return labels, model


def generative_patterns(found: Patterns, classes: list[str], functions: list[str], *,
                        prior: np.ndarray | None = None, smoothing: float = SMOOTHING,
                        max_iterations: int = 100, tolerance: float = 1e-6
                        ) -> tuple[np.ndarray, FittedModel]:
    """`generative` on the patterns alone: each pattern's class index, and the model. Only
    the patterns and their counts enter the fit, so the counts may be summed from files."""
    k = len(classes)
    voted = (found.rows >= 0).any(axis=1)
    rows, counts = found.rows[voted], found.counts[voted]
    decided = np.full(found.rows.shape[0], -1, np.int64)
    model = FittedModel("generative", list(classes), list(functions), prior, None, 0, True)
    if rows.shape[0]:
        # every function answers every row: a class, or abstain (answer k)
        item, observer = np.indices(rows.shape).reshape(2, -1)
        label = rows.reshape(-1).astype(np.int64)
        label[label < 0] = k
        fit = dawid_skene(item, observer, label, np.ones(len(item)), rows.shape[0],
                          rows.shape[1], k, weight=counts.astype(np.float64), prior=prior,
                          smoothing=smoothing, max_iterations=max_iterations,
                          tolerance=tolerance, outcomes=k + 1)
        decided[np.flatnonzero(voted)] = _decide(fit.posterior, np.ones(rows.shape[0], bool))
        model = FittedModel("generative", list(classes), list(functions), fit.prior,
                            fit.confusion, fit.iterations, fit.converged)
    return decided, model
