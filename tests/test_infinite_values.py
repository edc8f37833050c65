"""Infinite and NaN numbers in an environment: taken where the format says so (a slice's bin
edges: `.inf` leaves an end open), refused with a diagnostic everywhere else. Both used to end
in an internal error (exit 3) when the lock digested the environment: its canonical JSON has no
such numbers."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import BASE_YAML, invoke_cli, write_repo


def _env(extra: str) -> str:
    return BASE_YAML + textwrap.dedent(extra)


def _digest(root) -> str:
    return json.loads((root / "environments" / "base.lock.json").read_text())["environment_digest"]


def test_open_bin_edges_lock_and_count_in_the_digest(tmp_path):
    bins = "evaluation:\n  slices:\n    - by: runtime_minutes\n      bins: [-.inf, 100, {}]\n"
    open_end, closed = tmp_path / "open", tmp_path / "closed"
    write_repo(open_end, envs={"base": _env(bins.format(".inf"))})
    write_repo(closed, envs={"base": _env(bins.format("1000"))})
    for root in (open_end, closed):
        code, out, err = invoke_cli(["lock", "base"], root)
        assert code == 0, out + err
    first = _digest(open_end)
    (open_end / "environments" / "base.lock.json").unlink()
    assert invoke_cli(["lock", "base"], open_end)[0] == 0
    assert _digest(open_end) == first  # the same environment, the same digest
    assert first != _digest(closed)  # and an open end is not a closed one


@pytest.mark.parametrize("column, expected", [
    ("{dtype: float64, range: [0, .inf]}", "error[BE011]: datasets.movies.columns.runtime_minutes: "
     "range bounds cannot be NaN or infinite: write null for an open end"),
    ("{dtype: float64, range: [.nan, 10]}", "range bounds cannot be NaN or infinite"),
    ("{dtype: float64, max_null_fraction: .nan}", "error[BE004]: datasets.movies.columns."
     "runtime_minutes.max_null_fraction: Input should be a finite number"),
])
def test_infinite_or_nan_bounds_are_refused_at_their_line(tmp_path, column, expected):
    env = BASE_YAML.replace("runtime_minutes: {dtype: float64, range: [1, 600]}",
                            f"runtime_minutes: {column}", 1)
    assert env != BASE_YAML
    write_repo(tmp_path, envs={"base": env})
    code, out, err = invoke_cli(["lock", "base"], tmp_path)
    assert code == 2, out + err
    assert expected in err and "internal error" not in err, err


def test_an_infinite_threshold_is_refused_not_an_internal_error(tmp_path):
    env = BASE_YAML.replace("genre: {linf: 0.05}", "runtime_minutes: {psi: .inf}")
    assert env != BASE_YAML
    write_repo(tmp_path, envs={"base": env})
    code, out, err = invoke_cli(["lock", "base"], tmp_path)
    assert code == 2, out + err
    assert "monitoring.drift.columns.runtime_minutes.psi: Input should be a finite number" in err, err
