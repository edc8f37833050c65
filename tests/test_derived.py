"""Derived datasets (docs/derived.md): computed by a transform per file of their first input,
partitioned like it, pinned by the digests of code and inputs, rebuilt per changed input file,
rebuilt from the lock in a fresh checkout, and refused with a diagnostic when the code is
wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli
from partitioned_repo import DAYS, FILES_PER_DAY, age, file_path, write_file
from sourcerepo import source_fixtures

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse

FILES = DAYS * FILES_PER_DAY


_progress, template, locked = source_fixtures("derived")


def lock_json(root: Path) -> dict:
    return json.loads((root / "environments" / "ev.lock.json").read_text())


def expected_daily(root: Path, day: int, part: int) -> pd.DataFrame:
    """What the transform computes from one input file, by pandas directly."""
    df = pq.read_table(file_path(root, day, part), columns=["kind", "x"]).to_pandas()
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    return out.sort_values("kind").reset_index(drop=True)


def test_output_is_partitioned_like_the_input_one_file_per_input_file(locked):
    entry = lock_json(locked)["datasets"]["daily"]
    events = lock_json(locked)["datasets"]["events"]
    assert entry["uri"] == ".buildenv/derived/ev/daily/"
    assert entry["partitions"] == ["date"]
    assert [f["path"] for f in entry["files"]] == [f["path"] for f in events["files"]]
    assert entry["derived"]["transform"] == "transforms/daily.py:daily"
    assert entry["derived"]["inputs"] == {"events": events["digest"]}
    assert list(entry["derived"]["code"]) == ["transforms/daily.py"]
    out = locked / ".buildenv/derived/ev/daily"
    for day in range(DAYS):
        for part in range(FILES_PER_DAY):
            rel = file_path(locked, day, part).relative_to(locked / "data/events")
            got = pq.read_table(out / rel)
            pd.testing.assert_frame_equal(got.to_pandas()[["kind", "n", "mean_x"]],
                                          expected_daily(locked, day, part),
                                          check_dtype=False)


def test_lock_check_passes_and_readers_see_the_derived_dataset(locked):
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0
    from buildenv.compile.locking import checked_lock
    from buildenv.data.gate.gate import Gate

    multiverse = Multiverse(Project.discover(locked))
    res = multiverse.resolve("ev")
    lock, problems = checked_lock(multiverse, res)
    assert lock is not None and not [p for p in problems if p.is_error]
    gate = Gate(multiverse.project, res.env, "test", pins={n: d.digest for n, d in
                                                           lock.datasets.items()},
                manifests=lock.manifests())
    with gate.open("daily") as read:
        table = read.table(["date", "kind", "n"])
    assert table.num_rows == 3 * FILES
    assert sum(table.column("n").to_pylist()) == lock_json(locked)["datasets"]["events"]["rows"]


def test_a_new_input_file_rebuilds_that_file_only(locked):
    write_file(locked, DAYS, 0)
    age(locked)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert f"derive daily (1 of {FILES + 1} files)" in err
    assert "(3 function-file pairs)" in err  # the label set: three functions on one new file
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0
    assert len(lock_json(locked)["datasets"]["daily"]["files"]) == FILES + 1


def test_one_changed_input_file_is_laid_out_alone_and_anything_else_swaps_the_directory(locked):
    out = locked / ".buildenv/derived/ev/daily"
    assert invoke_cli(["lock", "ev"], locked)[0] == 0  # links again what the copy made files
    rel = file_path(locked, 1, 1).relative_to(locked / "data/events")
    others = {p: p.stat().st_ino for p in out.rglob("*.parquet") if p != out / rel}
    directory = out.stat().st_ino
    write_file(locked, 1, 1, seed=999)
    age(locked)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    # one file differs: its link is renamed into the same directory, the others stay
    assert out.stat().st_ino == directory
    assert {p: p.stat().st_ino for p in others} == others
    got = pq.read_table(out / rel).to_pandas()[["kind", "n", "mean_x"]]
    pd.testing.assert_frame_equal(got, expected_daily(locked, 1, 1), check_dtype=False)
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0
    # a file that does not belong there: the directory is laid out whole, without it
    (out / "stray.parquet").write_bytes(b"x")
    write_file(locked, 2, 0, seed=998)
    age(locked)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    assert out.stat().st_ino != directory and not (out / "stray.parquet").exists()
    assert len(list(out.rglob("*.parquet"))) == FILES
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


def test_unchanged_relock_runs_nothing(locked):
    code, out, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (" not in err and "apply labeling" not in err, err


def test_lock_check_names_the_changed_input_file_and_the_changed_code(locked):
    write_file(locked, 1, 1, seed=999)
    age(locked)
    with (locked / "transforms" / "daily.py").open("a") as f:
        f.write("\nTHRESHOLD = 1\n")
    code, out, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1
    assert "BE093" in err and "'events'" in err and "date=2026-09-02/part-1.parquet" in err
    assert "BE092" in err and "transforms/daily.py" in err
    # changed code rebuilds every file; the lock is then current again
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily ({FILES} of {FILES} files)" in err, err
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


def test_lock_check_names_what_reads_a_stale_derived_dataset(locked):
    """A derived dataset of a derived dataset, and a label set over one, whose own pins hold
    while what they read is stale: rebuilding it may change them (the files whose bytes
    change), so `lock --check` names them too, as warnings beside the stale one."""
    (locked / "transforms" / "busy.py").write_text(
        'def busy(ctx):\n    return ctx.read("daily", columns=["kind", "n"]).query("n > 1")\n')
    (locked / "rules" / "busy.py").write_text(
        "import numpy as np\nimport buildenv\n\n\n"
        '@buildenv.labeling_function(columns=["n"])\ndef many(batch):\n'
        '    return np.where(batch["n"] > 3, "pos", "neg")\n')
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("  daily:\n", BUSY + "  daily:\n").replace(
        "labels:\n", "labels:\n" + BUSY_KINDS))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    daily = locked / "transforms" / "daily.py"
    daily.write_text(daily.read_text().replace('agg(n=("x", "size")', 'agg(n=("x", "count")'))
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "error[BE092]: dataset 'daily' is stale" in err, err
    assert "warning[BE093]: dataset 'busy' may be stale: its input 'daily' is stale" in err, err
    assert "warning[BE875]: label set 'busy-kinds' may be stale: its dataset 'daily' is " \
        "stale" in err, err
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 0 and "BE093" not in err and "BE875" not in err, err


BUSY = """\
  busy:
    source:
      transform: transforms/busy.py:busy
      inputs: [daily]
    columns:
      date: {dtype: date}
      kind: {dtype: string}
      n: {dtype: int64, nullable: false}
"""

BUSY_KINDS = """\
  busy-kinds:
    dataset: daily
    key: kind
    taxonomy: {name: busy, version: 1, classes: [neg, pos]}
    source:
      functions: rules/busy.py
"""


def test_an_output_file_removed_outside_buildenv_is_rebuilt_not_called_new_data(locked):
    """One output file gone (or edited) while the code and inputs are as pinned: the checkout
    does not hold what the lock pins, like a fresh one (BE094), so `lock --check` lays it out
    again; it said BE051 "changed since it was locked" with drift and checkout hints, and
    called what reads it stale."""
    gone = locked / ".buildenv/derived/ev/daily/date=2026-09-02/part-1.parquet"
    pinned = gone.read_bytes()
    gone.unlink()
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 0 and "BE051" not in err and "BE093" not in err, err
    assert gone.read_bytes() == pinned
    # without the stored outputs, the transform runs again
    gone.unlink()
    shutil.rmtree(locked / ".buildenv/derived/objects")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 0, err
    assert gone.read_bytes() == pinned


def test_validate_in_a_fresh_checkout_builds_the_outputs_it_checks(locked):
    """CI's `buildenv validate` on a checkout without .buildenv/: the outputs are built from
    the lock, as `lock --check` and `build` build them (it was BE053 "not found")."""
    shutil.rmtree(locked / ".buildenv")
    code, out, err = invoke_cli(["validate", "ev"], locked)
    assert code == 0 and "BE053" not in err, err
    assert (locked / ".buildenv/derived/ev/daily/date=2026-09-01/part-0.parquet").is_file()


def test_a_new_first_input_is_named_as_the_layout_change_it_is(locked):
    """The output is laid out like the first input: putting a one-file input first moves it
    from a directory to one file. `lock --check` said "uri changed" between two paths under
    .buildenv/ that nobody wrote."""
    pq.write_table(pq.read_table(locked / "data" / "events").select(["kind"]).slice(0, 3),
                   locked / "data" / "kinds.parquet")
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("  daily:\n", KINDS + "  daily:\n").replace(
        "inputs: [events]", "inputs: [kinds, events]"))
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "BE052" in err, err
    assert "dataset 'daily' is now laid out like its first input 'kinds' (one file); the " \
        "lock has one file per input file" in err, err
    assert "uri changed" not in err


KINDS = """\
  kinds:
    uri: data/kinds.parquet
    columns:
      kind: {dtype: string}
"""


def test_a_fresh_checkout_rebuilds_what_the_lock_pins(locked):
    """Outputs live under .buildenv/, which is not committed: commands that read the data
    rebuild them from the pinned inputs and code, and they come out as pinned."""
    pinned = lock_json(locked)["datasets"]["daily"]["digest"]
    shutil.rmtree(locked / ".buildenv")
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    code, out, err = invoke_cli(["lock", "ev", "--check"], locked)  # what CI runs
    assert code == 0, err
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before
    shutil.rmtree(locked / ".buildenv")
    code, out, err = invoke_cli(["labels", "ev"], locked)
    assert code == 0, err
    assert (locked / ".buildenv/derived/ev/daily/date=2026-09-01/part-0.parquet").is_file()
    assert (locked / ".buildenv/labels/ev/rules.parquet").is_file()
    assert lock_json(locked)["datasets"]["daily"]["digest"] == pinned
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


def test_a_transform_that_is_not_deterministic_is_caught_when_rebuilt_from_the_lock(locked):
    path = locked / "transforms" / "daily.py"
    path.write_text(path.read_text().replace(
        'mean_x=("x", "mean"))', 'mean_x=("x", "mean"))\n    out["mean_x"] += '
        '__import__("time").time_ns() % 1000'))
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    shutil.rmtree(locked / ".buildenv")
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    code, _, err = invoke_cli(["labels", "ev"], locked)
    assert code == 1 and "BE094" in err and "not as the lock pins it" in err, err
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before


def test_two_transforms_in_one_module_are_each_checked_against_their_own_inputs(locked):
    # a second derived dataset over the first, its transform beside the first one's: each
    # function's reads are checked against its own inputs, not the other's
    module = locked / "transforms" / "daily.py"
    module.write_text(module.read_text() + '''

def _big(df):
    return df[df["n"] > 1]


def busy(ctx):
    return _big(ctx.read("daily", columns=["kind", "n"]))
''')
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("  daily:\n", """\
  busy:
    source:
      transform: transforms/daily.py:busy
      inputs: [daily]
    columns:
      date: {dtype: date}
      kind: {dtype: string}
      n: {dtype: int64, nullable: false}
  daily:
"""))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "BE101" not in err, err
    assert list((locked / ".buildenv/derived/ev/busy").rglob("*.parquet"))
    # a read the transform does reach is still checked before it runs
    module.write_text(module.read_text().replace('columns=["kind", "n"]',
                                                 'columns=["kind", "secret"]'))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE102" in err and "'secret'" in err, err


# --- bad input ----------------------------------------------------------------------------------

def _break(root: Path, body: str) -> None:
    (root / "transforms" / "daily.py").write_text("import pandas as pd\n\n\ndef daily(ctx):\n"
                                                  + body)


def _relock(root: Path) -> tuple[int, str]:
    before = (root / "environments" / "ev.lock.json").read_bytes()
    code, _, err = invoke_cli(["lock", "ev"], root)
    assert (root / "environments" / "ev.lock.json").read_bytes() == before  # nothing partial
    return code, err


def test_a_transform_that_raises_is_named_with_its_line_and_the_input_file(locked):
    _break(locked, '    df = ctx.read("events", columns=["x"])\n'
                   '    raise ValueError("no good")\n')
    code, err = _relock(locked)
    assert code == 1 and "BE340" in err and "transforms/daily.py:6" in err, err
    assert "ValueError: no good" in err and "input file date=2026-09-01/part-0.parquet" in err
    assert "Traceback" not in err


def test_a_transform_returning_other_columns_is_refused(locked):
    _break(locked, '    return pd.DataFrame({"kind": ["a"], "other": [1]})\n')
    code, err = _relock(locked)
    assert code == 1 and "BE341" in err, err


def test_a_transform_returning_the_wrong_type_is_refused(locked):
    _break(locked, '    return pd.DataFrame({"kind": ["a"], "n": ["many"], "mean_x": [0.0]})\n')
    code, err = _relock(locked)
    assert code == 1 and "BE342" in err and "'n'" in err, err


def test_a_transform_reading_what_it_does_not_declare_is_refused_before_it_runs(locked):
    _break(locked, '    return ctx.read("events", columns=["secret"])\n')
    code, err = _relock(locked)
    assert code == 1 and "BE102" in err and "derive daily" not in err, err


def test_a_declared_dataset_that_is_not_an_input_is_named_as_such(locked):
    _break(locked, '    return ctx.read("daily", columns=["n"])\n')
    code, err = _relock(locked)
    assert code == 1 and "transforms/daily.py:5:21: error[BE101]: dataset 'daily' is not an " \
        "input of derived dataset 'daily' (inputs: events)" in err, err
    assert "not declared in environment" not in err, err
    # its own output: adding it to the inputs would be a cycle, so the hint does not say so
    assert "cannot read its own output" in err and "add 'daily' to" not in err, err


def test_the_non_input_wording_takes_the_read_dataset_not_a_piece_of_the_message(locked):
    """The dataset of BE101 travels as a field of the finding: a name holding a quote, whose
    message a parser would cut at the quote ('daily'), is an undeclared dataset, not an
    input missing from the transform's list."""
    _break(locked, '    return ctx.read("daily\' x", columns=["n"])\n')
    code, err = _relock(locked)
    assert code == 1 and "error[BE101]: dataset 'daily' x' is not declared in environment" \
        in err, err
    assert "not an input" not in err, err


def test_a_getattr_on_its_dataframe_keeps_another_transforms_reads_out_of_its_check(locked):
    """Two transforms in one module, over different inputs: `daily` looks a method of its
    DataFrame up by a computed name, which cannot reach `weekly`, so `weekly`'s read of
    `daily` is not checked against `daily`'s inputs (it was: a false BE101 "not an input")."""
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("      mean_x: {dtype: float64}\n", (
        "      mean_x: {dtype: float64}\n  weekly:\n    source:\n"
        "      transform: transforms/daily.py:weekly\n      inputs: [daily]\n    columns:\n"
        "      date: {dtype: date}\n      kind: {dtype: string}\n"
        "      n: {dtype: int64, nullable: false}\n"), 1))
    (locked / "transforms" / "daily.py").write_text(
        "import pandas as pd\n\nHOW = \"sum\"\n\n\n"
        "def daily(ctx):\n    df = ctx.read(\"events\", columns=[\"kind\", \"x\"])\n"
        "    grouped = df.groupby(\"kind\", as_index=False)\n"
        "    return getattr(grouped, HOW)()\n\n\n"
        "def weekly(ctx):\n    return ctx.read(\"daily\", columns=[\"date\", \"kind\", \"n\"])\n")
    from buildenv.compile.derive import transform_problems

    project = Project.discover(locked)
    res = Multiverse(project).resolve("ev")
    assert transform_problems(project, res, "daily") == []
    assert transform_problems(project, res, "weekly") == []


def test_a_non_input_read_the_static_check_cannot_see_is_named_as_such_when_it_runs(locked):
    _break(locked, '    return getattr(ctx, "re" + "ad")("daily", columns=["n"])\n')
    code, err = _relock(locked)
    assert code == 1 and "BE343" in err and "dataset 'daily' is not an input of derived " \
        "dataset 'daily' (inputs: events)" in err, err
    assert "not declared in environment" not in err, err


def test_a_missing_transform_is_named(locked):
    _break(locked, "    return None\n")
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("daily.py:daily", "daily.py:weekly"))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE091" in err and "weekly" in err, err


@pytest.mark.parametrize("bad,needle", [
    ("inputs: [evnts]", "unknown input dataset 'evnts'"),
    ("inputs: [daily]", "derived from itself: daily -> daily"),
])
def test_bad_inputs_are_diagnosed_in_the_environment(locked, bad, needle):
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("inputs: [events]", bad))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 2 and "BE090" in err and needle in err, err


def test_a_derived_input_s_partition_columns_must_be_declared_too(locked):
    """A dataset derived from a derived one is partitioned like it (like `events`): an
    undeclared `date` was not caught, and `buildenv validate` ended in an internal KeyError."""
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("labels:\n", """\
  rollup:
    source:
      transform: transforms/daily.py:daily
      inputs: [daily]
    columns:
      kind: {dtype: string}
labels:
""", 1))
    for command in (["lock", "ev"], ["validate", "ev"]):
        code, _, err = invoke_cli(command, locked)
        assert code == 2 and "BE090" in err and "partition column 'date' of its first input " \
            "'daily' (partitioned like 'events') is not declared" in err, err


def test_a_derived_dataset_takes_no_uri(locked):
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("  daily:\n", "  daily:\n    uri: out/\n"))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 2 and "BE090" in err and "takes no `uri`" in err, err


def test_restricted_inputs_make_a_restricted_output_unless_aggregated(locked):
    env = Multiverse(Project.discover(locked)).resolve("ev").env
    privacy = env.privacy.model_copy(update={"restricted": ["events"]})
    env = env.model_copy(update={"privacy": privacy})
    assert env.restricted("daily")
    ds = env.datasets["daily"]
    assert ds.source is not None
    source = ds.source.model_copy(update={"aggregation": ds.source.aggregation
                                          or _aggregation()})
    env = env.model_copy(update={"datasets": {**env.datasets,
                                              "daily": ds.model_copy(update={"source": source})}})
    assert not env.restricted("daily")


def _aggregation():  # type: ignore[no-untyped-def]
    from buildenv.env.sources import Aggregation

    return Aggregation(count="n", min_group_size=10)


def test_the_transforms_process_imports_no_yaml_label_sets_or_dvc_before_its_request():
    """What the hermetic process imports while the build still plans is its start-up cost on
    every rebuild (bench_derived.py): the gate and the transform's context, not the
    environment resolver (YAML), the label-set modules or DVC's pin readers, which a transform
    needs only when it reads labels or a `dvc:` dataset (imported then)."""
    probe = ("import sys\nfrom buildenv.training import sources_runner\n"
             "sources_runner._prepare()\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'configparser')"
             " or m.startswith(('buildenv.env.resolve', 'buildenv.labels.labelset', "
             "'buildenv.data.lock.dvc_pins'))))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout
