"""Drift statistics, accumulator by accumulator (`monitor.statistics`): streamed in batches and
merged across files, they give what one pass over all the values gives -- which is what lets
a dataset be profiled file by file, on any executor, in bounded memory."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pytest

from buildenv.monitor.statistics import _Categorical, _Numeric

RNG = np.random.default_rng(20260630)
VALUES = RNG.normal(50, 12, 5_000).round(2)
NULLS = RNG.random(5_000) < 0.05
EDGES = np.array([30.0, 45.0, 50.0, 55.0, 70.0])


def _array(values, nulls):
    return pa.array(values, pa.float64(), mask=nulls)


def _streamed(pieces, sample_size=0, domain=None):
    """One accumulator per file (pieces of batches), merged in file order."""
    merged = None
    for batches in pieces:
        acc = _Numeric("float64", EDGES, sample_size, sample_size > 0, domain)
        for values, nulls, keys in batches:
            acc.update(_array(values, nulls), keys)
        if merged is None:
            merged = acc
        else:
            merged.merge(acc)
    return merged


def _split(n_files, n_batches, keys=None):
    cuts = np.linspace(0, len(VALUES), n_files * n_batches + 1).astype(int)
    parts = [(VALUES[a:b], NULLS[a:b], None if keys is None else keys[a:b])
             for a, b in pairwise(cuts)]
    return [parts[i * n_batches:(i + 1) * n_batches] for i in range(n_files)]


@pytest.mark.parametrize("files, batches", [(1, 1), (1, 7), (4, 3), (9, 1)])
def test_numeric_moments_and_bins_match_one_pass(files, batches):
    acc = _streamed(_split(files, batches))
    valid = VALUES[~NULLS]
    assert (acc.rows, acc.nulls, acc.n) == (len(VALUES), int(NULLS.sum()), len(valid))
    assert acc.mean == pytest.approx(valid.mean(), rel=1e-12)
    assert acc.m2 / (acc.n - 1) == pytest.approx(valid.var(ddof=1), rel=1e-10)
    assert (acc.min, acc.max) == (valid.min(), valid.max())
    below = [int((valid < edge).sum()) for edge in EDGES]
    assert acc.bin_counts().tolist() == np.diff([0, *below, len(valid)]).tolist()


@pytest.mark.parametrize("files, batches", [(1, 1), (3, 4), (10, 1)])
def test_the_sample_is_the_bottom_k_keys_whatever_the_split(files, batches):
    keys = RNG.random(len(VALUES))
    acc = _streamed(_split(files, batches, keys), sample_size=200)
    valid = ~NULLS
    chosen = np.argsort(np.where(valid, keys, np.inf))[:200]
    assert sorted(acc.values.tolist()) == sorted(VALUES[chosen].tolist())
    assert acc.tau == pytest.approx(keys[chosen].max())
    assert not acc.complete_sample


def test_values_outside_the_domain_are_counted_as_they_stream():
    acc = _streamed([[(np.array([1.0, 2.0, 7.0, 7.0]), np.zeros(4, bool), None)],
                     [(np.array([7.0, 9.0, 1.0]), np.array([False, False, True]), None)]],
                    domain=[1.0, 2.0])
    assert acc.out_of_domain == {7.0: 3, 9.0: 1}


def test_an_empty_file_merges_as_nothing():
    acc = _streamed([[(VALUES[:100], NULLS[:100], None)], [(np.array([]), np.array([], bool),
                                                            None)]])
    valid = VALUES[:100][~NULLS[:100]]
    assert acc.n == len(valid) and acc.mean == pytest.approx(valid.mean())
    assert math.isfinite(acc.min)


def test_categorical_counts_plain_and_dictionary_batches_alike():
    words = ["a", "b", None, "a", "c", "a", None, "b"]
    plain = _Categorical("string")
    plain.update(pa.array(words[:5]))
    plain.update(pa.array(words[5:]))
    encoded = _Categorical("string")
    encoded.update(pa.array(words).dictionary_encode())
    other = _Categorical("string")
    other.update(pa.array(["c", None]))
    encoded.merge(other)
    assert plain.counts == {"a": 3, "b": 2, "c": 1} and (plain.rows, plain.nulls) == (8, 2)
    assert encoded.counts == {"a": 3, "b": 2, "c": 2} and (encoded.rows, encoded.nulls) == (10, 3)


def test_booleans_count_true_and_false():
    acc = _Categorical("bool")
    acc.update(pa.array([True, None, False, True]))
    acc.update(pa.array([True]))
    assert acc.counts == {True: 3, False: 1} and acc.nulls == 1
