"""Sums per slice of one model on one slice family, for a chunk of bootstrap resamples.

The bootstrap (`training.bootstrap`) needs, for every resample and every slice, the weighted
sums every metric is a ratio of, and ROC AUC's Mann-Whitney count: for each positive row, the
weight of the negatives ranked below it in its slice. Row by row that is a running sum along
every resample, which NumPy computes one element after the other, and a few passes over a
(resamples x rows) matrix per figure. Here the family's rows are laid out once per model, in
slice order (by score within a slice), each slice padded to whole blocks of `BLOCK` rows
(padding weighs nothing), and stored lane-major: position `j` of every block side by side. So:

- the running sum of negative weight inside every block is `BLOCK` vector additions over all
  blocks and resamples at once, in small integer types (exact), and the count of negatives
  below each positive accumulates along with it; across blocks it is a running sum over
  blocks, `BLOCK` times shorter than over rows;
- every figure's sum per (resample, block) is one reduction over the lanes, and a slice's
  sum a sum over its blocks.

Ties in score count half: with positives ordered before the negatives of the same score no
tied pair counts, with negatives first every tied pair counts once; when a slice has such
ties the count is taken both ways and added, which is twice the Mann-Whitney count. Counts,
accuracy and ROC AUC are exact integers until the last division (the same numbers as summing
row by row); sums of real figures (log loss, errors) differ from a row-by-row sum only in the
last bits, by the order of additions, and are the same for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from buildenv.training.outputs import RowStats
from buildenv.training.slicing import Family

__all__ = ["BLOCK", "FamilySums"]

#: Rows per block. Inner counts stay within uint16/int32: weights <= 9, so a block's
#: negative weight <= 9 * BLOCK and its Mann-Whitney count <= 81 * BLOCK**2 / 2.
BLOCK = 32


@dataclass
class _Layout:
    """Padded, lane-major positions of a family's rows in one order."""

    take: np.ndarray  # evaluation row at each position (padding: row 0, weighed by 0)
    codes: np.ndarray  # non-empty slices, in layout order
    first: np.ndarray  # first block of each of them
    position: np.ndarray  # layout position of each ordered row
    blocks: int

    @classmethod
    def of(cls, order: np.ndarray, code: np.ndarray) -> _Layout:
        codes, starts, counts = np.unique(code, return_index=True, return_counts=True)
        per_slice = -(-counts // BLOCK)
        first = (np.cumsum(per_slice) - per_slice).astype(np.int64)
        blocks = int(per_slice.sum())
        padded = np.repeat(first * BLOCK - starts, counts) + np.arange(len(order))
        position = (padded % BLOCK) * blocks + padded // BLOCK  # lane-major
        take = np.zeros(blocks * BLOCK, np.int64)
        take[position] = order
        return cls(take, codes, first, position, blocks)

    def put(self, values: np.ndarray, dtype: type) -> np.ndarray:
        """Per-row `values` (in the layout's order) at their positions, (BLOCK, blocks)."""
        out: np.ndarray = np.zeros(self.blocks * BLOCK, dtype)
        out[self.position] = values
        return out.reshape(BLOCK, self.blocks)

    def weights(self, weights: np.ndarray) -> np.ndarray:
        """uint8 weights (resamples, rows) at the layout's positions: (resamples, BLOCK,
        blocks)."""
        return np.take(weights, self.take, axis=1).reshape(len(weights), BLOCK, self.blocks)


@dataclass
class FamilySums:
    """One model on one family's slices (see the module doc)."""

    size: int  # slices of the family
    layout: _Layout
    valid: np.ndarray  # uint8 per position: 1 for a row, 0 for padding
    exact: dict[str, np.ndarray]  # 0/1 figures, uint8 per position (integer sums)
    real: dict[str, np.ndarray]  # other figures, float64 per position
    auc: _Ranks | None

    @classmethod
    def of(cls, family: Family, stats: RowStats) -> FamilySums:
        codes = family.codes
        inside = np.flatnonzero(codes >= 0)
        binary = stats.score is not None and stats.positive is not None
        if binary:
            assert stats.score is not None and stats.positive is not None
            # by slice, then score, then positives before negatives of the same score
            order = inside[np.lexsort((~stats.positive[inside], stats.score[inside],
                                       codes[inside]))]
        else:
            order = inside[np.argsort(codes[inside], kind="stable")]
        layout = _Layout.of(order, codes[order])
        exact, real = {}, {}
        for name, value in stats.sums.items():
            if np.isin(value, (0.0, 1.0)).all():
                exact[name] = layout.put(value[order], np.uint8)
            else:
                real[name] = layout.put(value[order], np.float64)
        auc = _Ranks.of(order, layout, codes, stats) if binary else None
        return cls(family.size, layout, layout.put(np.ones(len(order)), np.uint8), exact,
                   real, auc)

    def sums(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Sums per (resample, slice) of the count `n`, of each figure, and `auc` (ROC AUC,
        NaN where a slice lacks positives or negatives), for uint8 weights (resamples, rows);
        0 for empty slices."""
        chunk, layout = len(weights), self.layout
        full = {k: np.zeros((chunk, self.size)) for k in ["n", *self.exact, *self.real]}
        if self.auc is not None:
            full["auc"] = np.full((chunk, self.size), np.nan)
        if not layout.blocks:
            return full
        w = layout.weights(weights)
        codes = layout.codes

        def per_slice(per_block: np.ndarray) -> np.ndarray:
            return np.add.reduceat(per_block.astype(np.float64, copy=False), layout.first,
                                   axis=1)

        for name, value in self.exact.items():
            full[name][:, codes] = per_slice(_lane_sum(w, value))
        for name, value in self.real.items():
            full[name][:, codes] = per_slice(np.einsum("rjb,jb->rb", w, value))
        if self.auc is not None:
            full["n"][:, codes], full["auc"][:, codes] = self.auc.value(w, weights, layout)
        else:
            full["n"][:, codes] = per_slice(_lane_sum(w, self.valid))
        return full


@dataclass
class _Ranks:
    """ROC AUC per slice as the Mann-Whitney statistic (see the module doc)."""

    positive: np.ndarray  # uint8 per position: 1 for a positive row
    negative: np.ndarray  # uint8 per position: 1 for a negative row
    tied: _Layout | None  # negatives first among ties; None: no tie mixes the classes
    tied_positive: np.ndarray | None
    tied_negative: np.ndarray | None

    @classmethod
    def of(cls, order: np.ndarray, layout: _Layout, codes: np.ndarray,
           stats: RowStats) -> _Ranks:
        assert stats.score is not None and stats.positive is not None
        positive, score, code = stats.positive[order], stats.score[order], codes[order]
        new_block = np.r_[True, (code[1:] != code[:-1]) | (score[1:] != score[:-1])]
        block = np.cumsum(new_block[:len(order)]) - 1
        kinds = np.bincount(block, weights=positive) if len(order) else np.zeros(0)
        mixed = bool(((kinds > 0) & (kinds < np.bincount(block))).any()) if len(order) \
            else False
        tied = tied_positive = tied_negative = None
        if mixed:
            inside = order[np.lexsort((positive, score, code))]  # negatives first
            tied = _Layout.of(inside, codes[inside])
            flag = stats.positive[inside]
            tied_positive, tied_negative = tied.put(flag, np.uint8), tied.put(~flag, np.uint8)
        return cls(layout.put(positive, np.uint8), layout.put(~positive, np.uint8), tied,
                   tied_positive, tied_negative)

    def value(self, w: np.ndarray, weights: np.ndarray, layout: _Layout
              ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, AUC) per (resample, non-empty slice), for the weights `w` at the layout's
        positions (and the `weights` of every row, for the order with negatives first)."""
        pos_weight, neg_weight, twice = _mann_whitney(w, self.positive, self.negative,
                                                      layout.first)
        if self.tied is None:
            twice *= 2.0
        else:
            assert self.tied_positive is not None and self.tied_negative is not None
            twice += _mann_whitney(self.tied.weights(weights), self.tied_positive,
                                   self.tied_negative, layout.first)[2]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = twice / (2.0 * pos_weight * neg_weight)
        value = np.where((pos_weight > 0) & (neg_weight > 0), value, np.nan)
        return pos_weight + neg_weight, value


def _lane_sum(w: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Weight of the rows with `flag` 1 per (resample, block), lane by lane (in cache)."""
    shape = (len(w), w.shape[2])
    total = np.zeros(shape, np.uint16)
    part = np.empty(shape, np.uint8)
    for j in range(BLOCK):
        np.multiply(w[:, j], flag[j], out=part)
        total += part
    return total


def _mann_whitney(w: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                  first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive weight, negative weight and the weight of (negative, positive) pairs with the
    negative earlier in the layout, per (resample, slice) starting at block `first`."""
    shape = (len(w), w.shape[2])  # (resamples, blocks): one lane of every block at a time
    pos, neg = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
    running = np.zeros(shape, np.uint16)  # negative weight before lane j, in each block
    pos_block = np.zeros(shape, np.uint16)
    pairs = np.zeros(shape, np.int32)
    product = np.empty(shape, np.uint16)
    for j in range(BLOCK):  # lane by lane: small arrays that stay in cache
        np.multiply(w[:, j], positive[j], out=pos)
        np.multiply(w[:, j], negative[j], out=neg)
        if j:
            np.multiply(pos, running, out=product)
            pairs += product
        running += neg
        pos_block += pos
    neg_block = running.astype(np.float64)
    pos_block = pos_block.astype(np.float64)
    neg_before = np.cumsum(neg_block, axis=1) - neg_block  # in earlier blocks (exact)
    pos_weight = np.add.reduceat(pos_block, first, axis=1)
    neg_weight = np.add.reduceat(neg_block, first, axis=1)
    found = np.add.reduceat(pairs + pos_block * neg_before, first, axis=1)
    return pos_weight, neg_weight, found - neg_before[:, first] * pos_weight
