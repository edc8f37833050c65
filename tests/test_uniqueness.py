"""`unique: true`: exact duplicate counts over batches, in memory or spilled to disk by hash
partitions, always equal to a plain Counter; no in-memory count ever holds more than the budget
once spilling starts; spill files never outlive the count; a failed spill is reported."""

from __future__ import annotations

import collections
import datetime as dt
import errno
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from buildenv.data.validate import uniqueness
from buildenv.data.validate.uniqueness import DuplicateCounter


def reference(values: list) -> tuple[int, int, list[tuple]]:
    counts = collections.Counter(v for v in values if v is not None)
    repeated = {k: n for k, n in counts.items() if n > 1}
    top = sorted(repeated.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return len(repeated), sum(repeated.values()), [(k, n) for k, n in top]


def count(chunks: list[pa.Array], budget: int | None, spill_dir: Path | None = None,
          examples: int = 3):
    counter = DuplicateCounter(budget=budget, examples=examples,
                               spill_dir=str(spill_dir) if spill_dir else None)
    for chunk in chunks:
        counter.add(chunk)
    return counter.finish()


def batches(values: list, size: int, type_: pa.DataType) -> list[pa.Array]:
    return [pa.array(values[i:i + size], type_) for i in range(0, len(values), size)]


BUDGETS = [None, 200_000, 20_000, 4_000]  # in memory; spilled; split again; tiny


def int_values(seed: int = 3, n: int = 60_000) -> list:
    rng = np.random.default_rng(seed)
    values: list = rng.integers(-40_000, 40_000, n).tolist()
    for i in np.flatnonzero(rng.random(n) < 0.05):
        values[i] = None
    values[:9000] = [7] * 9000  # a heavy hitter: one value in 15% of the rows
    values[9000:9010] = [2**62, -(2**62)] * 5
    return values


@pytest.mark.parametrize("budget", BUDGETS)
def test_integers_match_a_counter(budget, tmp_path):
    values = int_values()
    found = count(batches(values, 4096, pa.int64()), budget, tmp_path)
    assert (found.values, found.rows, found.examples) == reference(values)
    assert found.spilled == (budget is not None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("budget", BUDGETS)
def test_strings_and_dictionaries_match_a_counter(budget, tmp_path):
    rng = np.random.default_rng(5)
    values: list = [None if rng.random() < 0.03 else
                    f"key-{rng.integers(0, 30_000):06d}" * int(rng.integers(1, 4))
                    for _ in range(40_000)]
    values[10:14] = ["", "", "é日本", "é日本"]
    values[20:23] = ["x" * 5000, "x" * 5000, "x" * 4999 + "y"]  # hashed one by one
    expected = reference(values)
    plain = batches(values, 3000, pa.string())
    assert (lambda r: (r.values, r.rows, r.examples))(count(plain, budget, tmp_path)) == expected
    encoded = [chunk.dictionary_encode() for chunk in plain]
    assert (lambda r: (r.values, r.rows, r.examples))(count(encoded, budget, tmp_path)) == expected
    large = [chunk.cast(pa.large_string()) for chunk in plain]
    assert (lambda r: (r.values, r.rows, r.examples))(count(large, budget, tmp_path)) == expected
    sliced = [pa.array(values, pa.string()).slice(i, 5000) for i in range(0, len(values), 5000)]
    assert (lambda r: (r.values, r.rows, r.examples))(count(sliced, budget, tmp_path)) == expected
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("budget", [None, 64])
def test_floats_dates_and_timestamps_compare_by_value(budget):
    floats = [0.0, -0.0, float("nan"), float("nan"), 1.5, None, 1.5, 2.5]
    found = count([pa.array(floats, pa.float32()), pa.array([2.5], pa.float32())], budget)
    assert (found.values, found.rows) == (4, 8)  # 0.0 = -0.0, NaN = NaN, 1.5 and 2.5 twice
    days = [dt.date(2020, 1, 1), dt.date(2020, 1, 1), dt.date(2021, 1, 1), None]
    found = count([pa.array(days, pa.date32())], budget)
    assert (found.values, found.rows, found.examples) == (1, 2, [(dt.date(2020, 1, 1), 2)])
    at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    found = count([pa.array([at, at, at + dt.timedelta(microseconds=1)],
                            pa.timestamp("us", "UTC"))], budget)
    assert (found.values, found.rows) == (1, 2) and found.examples[0][0] == at


def test_nothing_is_counted_in_memory_beyond_the_budget_once_spilling(monkeypatch, tmp_path):
    sizes: list[int] = []
    original = DuplicateCounter._count

    def spy(self, keys, out, found):
        sizes.append(int(keys.nbytes))
        return original(self, keys, out, found)

    monkeypatch.setattr(DuplicateCounter, "_count", spy)
    rng = np.random.default_rng(9)
    values = rng.integers(0, 10**12, 200_000).tolist()  # ~1.6 MB of keys, nearly all distinct
    budget = 100_000
    found = count(batches(values, 8192, pa.int64()), budget, tmp_path)
    assert found.spilled and (found.values, found.rows) == reference(values)[:2]
    assert sizes and max(sizes) <= budget  # each partition counted alone (split again if big)
    assert sum(sizes) == len(values) * 8


def test_a_partition_dominated_by_one_value_is_folded_not_split_forever(monkeypatch, tmp_path):
    folds: list[int] = []
    original = DuplicateCounter._fold
    monkeypatch.setattr(DuplicateCounter, "_fold",
                        lambda self, *a: folds.append(1) or original(self, *a))
    values = [42] * 100_000 + list(range(1000))
    found = count(batches(values, 8192, pa.int64()), 10_000, tmp_path)
    assert folds and (found.values, found.rows, found.examples) == (1, 100_001, [(42, 100_001)])


def test_increasing_batches_need_no_sort_but_overlaps_are_still_found(monkeypatch):
    calls: list[int] = []
    original = DuplicateCounter._count
    monkeypatch.setattr(DuplicateCounter, "_count",
                        lambda self, keys, *a: calls.append(len(keys)) or original(self, keys, *a))
    ids = [pa.array(np.arange(i, i + 1000)) for i in range(0, 10_000, 1000)]
    assert count(ids, None).rows == 0 and calls == []
    overlapping = ids + [pa.array(np.arange(9_990, 10_010))]
    found = count(overlapping, None)
    assert (found.values, found.rows) == (10, 20) and calls == [10_020]


def test_spill_files_are_removed_when_a_count_is_abandoned(tmp_path):
    counter = DuplicateCounter(budget=1000, spill_dir=str(tmp_path))
    counter.add(pa.array(np.arange(10_000)))
    assert any(tmp_path.iterdir())  # spilling
    del counter  # validation raised mid-way: the counter is dropped, never finished
    assert list(tmp_path.iterdir()) == []


def test_a_failed_spill_is_reported_not_raised(monkeypatch, tmp_path):
    def full(self, keys):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uniqueness._Partitions, "write", full)
    counter = DuplicateCounter(budget=100, spill_dir=str(tmp_path))
    counter.add(pa.array(np.arange(1000)))
    counter.add(pa.array(np.arange(1000)))
    found = counter.finish()
    assert found.error == "OSError: [Errno 28] No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_validate_reports_a_failed_spill_and_does_not_cache_it(monkeypatch, tmp_path):
    from conftest import invoke_cli, write_parquet, write_repo

    from buildenv.core.project import Project
    from buildenv.data.lock.lockfile import read_lock
    from buildenv.data.validate.validate import validate_env
    from buildenv.env.resolve import Multiverse
    from buildenv.labels.locking import lock_environments

    repo = write_repo(tmp_path, envs={"k": "name: k\ndatasets:\n  t:\n    uri: data/k.parquet\n"
                                           "    columns:\n      id: {dtype: int64, unique: "
                                           "true}\n"})
    write_parquet(repo / "data" / "k.parquet", pa.table({"id": pa.array(np.arange(5000))}))
    lock_environments(Multiverse(Project(repo)), ["k"])
    monkeypatch.setattr(uniqueness, "BUDGET", 1000)
    monkeypatch.setattr(uniqueness._Partitions, "write",
                        lambda self, keys: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    code, _, err = invoke_cli(["validate", "k"], repo)
    assert code == 1
    assert err.splitlines()[0] == ("environments/k.yaml:6:26: error[BE210]: t.id: unique could "
                                   "not be checked: spilling values to disk failed (OSError: "
                                   "[Errno 28] full)")
    project = Project(repo)
    digests = {n: d.digest for n, d in read_lock(project, "k").datasets.items()}
    found = validate_env(Multiverse(project).resolve("k"), project, digests)
    assert [d.code for d in found] == ["BE210"]
    assert not list((repo / ".buildenv" / "cache" / "validate").rglob("*.json"))
    monkeypatch.undo()
    assert validate_env(Multiverse(project).resolve("k"), project, digests) == []
    assert len(list((repo / ".buildenv" / "cache" / "validate").rglob("*.json"))) == 1
