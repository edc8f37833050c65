"""Repository files a transform or labeling functions read are part of their code (issue #22,
docs/derived.md "Locked by code and inputs"): a changed, removed or new such file makes the
lock stale, `lock --check` names it, and `lock` rebuilds what it made; unchanged, nothing runs
and the lock is the same bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli
from partitioned_repo import DAYS, FILES_PER_DAY, age
from sourcerepo import make_source_repo

FILES = DAYS * FILES_PER_DAY

TRANSFORM = '''\
import yaml


def daily(ctx):
    with open("config/scale.yaml") as f:
        scale = yaml.safe_load(f)["scale"]
    df = ctx.read("events", columns=["kind", "x"])
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    out["mean_x"] = out["mean_x"] * scale
    return out.sort_values("kind").reset_index(drop=True)
'''


@pytest.fixture(autouse=True)
def progress_shown_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDENV_PROGRESS", "plain")
    monkeypatch.setenv("BUILDENV_PROGRESS_AFTER", "0")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_source_repo(tmp_path_factory.mktemp("derived_reads") / "repo")
    (root / "transforms" / "daily.py").write_text(TRANSFORM)
    (root / "config").mkdir()
    (root / "config" / "scale.yaml").write_text("scale: 1\n")
    age(root)
    code, _, err = invoke_cli(["lock", "ev"], root)
    assert code == 0, err
    return root


@pytest.fixture
def locked(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "repo", symlinks=True))


def lock_text(root: Path) -> str:
    return (root / "environments" / "ev.lock.json").read_text()


def means(root: Path) -> list[float]:
    table = pq.read_table(root / ".buildenv/derived/ev/daily", columns=["mean_x"])
    return sorted(table.column("mean_x").to_pylist())


def test_the_file_read_is_pinned_in_the_derived_record(locked):
    record = json.loads(lock_text(locked))["datasets"]["daily"]["derived"]
    assert list(record["files_read"]) == ["config/scale.yaml"]
    assert record["files_read"]["config/scale.yaml"].startswith("sha256:")
    assert list(record["code"]) == ["transforms/daily.py"]


def test_unchanged_relock_runs_nothing_and_writes_the_same_bytes(locked):
    before = lock_text(locked)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (" not in err, err
    assert lock_text(locked) == before
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


def test_a_changed_file_is_named_by_check_and_rebuilds_every_output(locked):
    was = means(locked)
    (locked / "config" / "scale.yaml").write_text("scale: 2\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1, err
    assert "BE092" in err and "stale: code file config/scale.yaml changed" in err, err
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily ({FILES} of {FILES} files)" in err, err
    assert means(locked) == pytest.approx([2 * m for m in was])
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0
    # and back: the outputs of the first version are still stored, nothing runs
    (locked / "config" / "scale.yaml").write_text("scale: 1\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (" not in err, err
    assert means(locked) == pytest.approx(was)


def test_a_removed_file_is_stale_and_named(locked):
    (locked / "config" / "scale.yaml").unlink()
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "code file config/scale.yaml was removed" in err, err
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE340" in err and "FileNotFoundError" in err, err


def test_the_lock_is_the_same_bytes_when_made_again_from_nothing(locked):
    """Without the lock (no record of what the code read) and without any stored output, or
    with the outputs but not the lock: the same lock, byte for byte. An output is stored only
    under the key of what its code read, never under the key of a plan that did not know."""
    before = lock_text(locked)
    (locked / "environments" / "ev.lock.json").unlink()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily ({FILES} of {FILES} files)" in err, err
    assert lock_text(locked) == before
    (locked / "environments" / "ev.lock.json").unlink()
    shutil.rmtree(locked / ".buildenv")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert lock_text(locked) == before


def test_a_fresh_checkout_rebuilds_as_pinned(locked):
    before = lock_text(locked)
    shutil.rmtree(locked / ".buildenv")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 0, err
    assert lock_text(locked) == before


def test_a_new_input_file_runs_that_file_only_and_keeps_the_record(locked):
    from partitioned_repo import write_file

    write_file(locked, DAYS, 0)
    age(locked)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily (1 of {FILES + 1} files)" in err, err
    record = json.loads(lock_text(locked))["datasets"]["daily"]["derived"]
    assert list(record["files_read"]) == ["config/scale.yaml"]
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (" not in err, err


def test_without_the_lock_a_changed_file_is_never_answered_by_an_old_output(locked):
    """With no lock, the build does not know what the code reads: its plan's keys hold no
    file. The outputs are stored under the keys of what it read, so a later build that knows
    nothing either finds none of them and runs the code, which reads the new file."""
    was = means(locked)
    (locked / "environments" / "ev.lock.json").unlink()
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    (locked / "environments" / "ev.lock.json").unlink()
    (locked / "config" / "scale.yaml").write_text("scale: 3\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily ({FILES} of {FILES} files)" in err, err
    assert means(locked) == pytest.approx([3 * m for m in was])
    assert "config/scale.yaml" in json.loads(lock_text(locked))["datasets"]["daily"]["derived"][
        "files_read"]


LATE = TRANSFORM.replace('    df = ctx.read(', '''\
    if str(ctx.partition["date"]) == "2026-09-05":  # a file only the new day's run reads
        with open("config/late.yaml") as f:
            scale *= yaml.safe_load(f)["scale"]
    df = ctx.read(''')


def test_a_file_only_a_new_input_files_run_reads_keeps_the_other_outputs(locked):
    """A run of one new input file whose code reads a file no earlier run read: the file joins
    the record, and the outputs built before (which did not read it) are stored under the keys
    that now hold it, so the next lock runs nothing."""
    from partitioned_repo import write_file

    (locked / "transforms" / "daily.py").write_text(LATE)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily ({FILES} of {FILES} files)" in err, err
    write_file(locked, DAYS, 0)
    (locked / "config" / "late.yaml").write_text("scale: 5\n")
    age(locked)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily (1 of {FILES + 1} files)" in err, err
    record = json.loads(lock_text(locked))["datasets"]["daily"]["derived"]
    assert list(record["files_read"]) == ["config/late.yaml", "config/scale.yaml"]
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (" not in err, err
    (locked / "config" / "late.yaml").write_text("scale: 6\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "code file config/late.yaml changed" in err, err


RULES = '''\
import numpy as np

import buildenv

with open("rules/kinds.txt") as f:  # read at import: part of every function's code
    KINDS = f.read().split()


@buildenv.labeling_function(columns=["x"])
def positive_x(batch):
    return np.where(batch["x"] > 0.5, "pos", None)


@buildenv.labeling_function(columns=["kind"])
def listed_kind(batch):
    return np.where(batch["kind"].isin(KINDS), "neg", None)
'''


@pytest.fixture
def labeled(locked: Path) -> Path:
    (locked / "rules" / "sign.py").write_text(RULES)
    (locked / "rules" / "kinds.txt").write_text("a\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    return locked


def test_labeling_functions_reading_a_word_list_pin_it(labeled):
    record = json.loads(lock_text(labeled))["labels"]["rules"]["source"]
    assert list(record["files_read"]) == ["rules/kinds.txt"]
    before = lock_text(labeled)
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 0 and "apply labeling" not in err, err
    assert lock_text(labeled) == before
    assert invoke_cli(["lock", "ev", "--check"], labeled)[0] == 0


def test_a_changed_word_list_is_named_and_its_functions_run_again(labeled):
    digest = json.loads(lock_text(labeled))["labels"]["rules"]["digest"]
    (labeled / "rules" / "kinds.txt").write_text("a\nb\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], labeled)
    assert code == 1, err
    assert "BE875" in err and "stale: code file rules/kinds.txt changed" in err, err
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 0 and f"({2 * FILES} function-file pairs)" in err, err
    assert json.loads(lock_text(labeled))["labels"]["rules"]["digest"] != digest
    assert invoke_cli(["lock", "ev", "--check"], labeled)[0] == 0
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 0 and "apply labeling" not in err, err


def test_a_removed_word_list_is_stale_and_named(labeled):
    (labeled / "rules" / "kinds.txt").unlink()
    code, _, err = invoke_cli(["lock", "ev", "--check"], labeled)
    assert code == 1 and "code file rules/kinds.txt was removed" in err, err


def test_only_files_the_users_code_opens_are_recorded(tmp_path: Path):
    """The recorder (in a process of its own: an audit hook stays for the process's life)
    notes what the user's code opens for reading inside the repository; not what buildenv
    opens on its behalf (the data gate), modules the import system loads (whether it loads
    one in a recording depends on what was imported before: the record would not be
    reproducible), writes, bytecode, `.buildenv/`, or files outside."""
    import subprocess
    import sys

    root = tmp_path / "repo"
    (root / "config").mkdir(parents=True)
    (root / ".buildenv").mkdir()
    for rel in ("config/a.yaml", "config/b.txt", "config/by_buildenv.txt", ".buildenv/state",
                "config/x.pyc"):
        (root / rel).write_text("x")
    (tmp_path / "outside.txt").write_text("x")
    (root / "user.py").write_text(
        "import os\nfrom pathlib import Path\n\n\n"
        "def run():\n"
        "    open('config/a.yaml').read()\n"
        "    os.close(os.open('config/b.txt', os.O_RDONLY))\n"
        "    Path('config/b.txt').read_text()\n"
        "    open('config/new.txt', 'w').close()\n"
        "    open('config/x.pyc', 'rb').close()\n"
        "    open('.buildenv/state').close()\n"
        "    open('../outside.txt').close()\n"
        "    try:\n        open('config/missing.yaml')\n    except OSError:\n        pass\n"
        "    import pkg.mod  # the import system opens pkg/__init__.py: a module, not a read\n"
        "    open('pkg/mod.py').close()  # the code opening a source file itself: a read\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    script = (
        "import json, sys\nfrom pathlib import Path\nimport buildenv\n"
        "from buildenv.training.code_reads import CodeReads\n"
        "from buildenv.data.lock.read_files import file_digests\n"
        "root = Path.cwd()\nsys.path.insert(0, str(root))\n"
        "recorder = CodeReads.installed(root, Path(buildenv.__file__).parent)\n"
        "open('config/a.yaml').close()  # not recording yet\n"
        "import user\n"
        "with recorder.recording() as read:\n"
        "    user.run()\n"
        "    file_digests(root, ['config/by_buildenv.txt'])\n"
        "open('config/b.txt').close()  # not recording any more\n"
        "print(json.dumps(read))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(Path(__file__).parents[1]),
                                          "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["config/a.yaml", "config/b.txt", "config/missing.yaml",
                                       "pkg/mod.py"]


def test_data_and_state_are_never_pinned_as_code(locked):
    from buildenv.core.project import Project
    from buildenv.data.lock.read_files import pinnable
    from buildenv.env.resolve import Multiverse

    multiverse = Multiverse(Project.discover(locked))
    res = multiverse.resolve("ev")
    read = ["config/scale.yaml", "data/events/date=2026-09-01/part-0.parquet",
            ".buildenv/derived/ev/daily/date=2026-09-01/part-0.parquet", "environments/ev.yaml",
            "transforms/__pycache__/daily.cpython-311.pyc", "transforms/daily.py"]
    assert pinnable(multiverse.project, res.env, ["transforms/daily.py"], read) == [
        "config/scale.yaml"]


LATE_RULES = RULES + '''

@buildenv.labeling_function(columns=["x"])
def late_list(batch):
    import os

    if os.path.exists("rules/late.txt"):  # not an open: an existence check is not seen
        with open("rules/late.txt") as f:
            f.read()
    return np.where(batch["x"] > 0.9, "pos", None)
'''


def test_a_file_only_a_new_data_files_functions_read_keeps_the_other_votes(labeled):
    """The labeling functions' run on a new data file reads a file no earlier run read: it
    joins the record, and the votes made before (which did not read it) are stored under the
    keys that now hold it, so the next lock applies nothing."""
    from partitioned_repo import write_file

    (labeled / "rules" / "sign.py").write_text(LATE_RULES)
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 0, err
    write_file(labeled, DAYS, 0)
    (labeled / "rules" / "late.txt").write_text("late\n")
    age(labeled)
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 0 and "(3 function-file pairs)" in err, err
    record = json.loads(lock_text(labeled))["labels"]["rules"]["source"]
    assert list(record["files_read"]) == ["rules/kinds.txt", "rules/late.txt"]
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 0 and "apply labeling" not in err, err
    assert invoke_cli(["lock", "ev", "--check"], labeled)[0] == 0


NATIVE = '''\
import pyarrow.csv as pv


def daily(ctx):
    table = pv.read_csv("lookups/scale.csv")  # opened by Arrow's C++: no audit event
    scale = table.column("scale")[0].as_py()
    df = ctx.read("events", columns=["kind", "x"])
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    out["mean_x"] = out["mean_x"] * scale
    return out.sort_values("kind").reset_index(drop=True)
'''


def declare(root: Path, line: str) -> None:
    env = root / "environments" / "ev.yaml"
    text = env.read_text()
    anchor = "      inputs: [events]\n"
    assert anchor in text
    env.write_text(text.replace(anchor, anchor + line, 1))


def test_a_file_native_code_reads_is_pinned_when_declared(locked):
    """pyarrow opening a path itself raises no audit event: unseen (the documented limit)
    until `source.files` declares it; then a change is named and rebuilds, and a new file the
    glob matches is a change too."""
    (locked / "lookups").mkdir()
    (locked / "lookups" / "scale.csv").write_text("scale\n1\n")
    (locked / "transforms" / "daily.py").write_text(NATIVE)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    record = json.loads(lock_text(locked))["datasets"]["daily"]["derived"]
    assert "files_read" not in record  # not seen
    declare(locked, '      files: ["lookups/*.csv"]\n')
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    record = json.loads(lock_text(locked))["datasets"]["daily"]["derived"]
    assert list(record["files_read"]) == ["lookups/scale.csv"]
    was = means(locked)
    (locked / "lookups" / "scale.csv").write_text("scale\n2\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "code file lookups/scale.csv changed" in err, err
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"derive daily ({FILES} of {FILES} files)" in err, err
    assert means(locked) == pytest.approx([2 * m for m in was])
    (locked / "lookups" / "other.csv").write_text("scale\n3\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "code file lookups/other.csv now exists" in err, err


def test_a_declared_glob_that_matches_nothing_is_refused(locked):
    declare(locked, '      files: ["lookups/*.csv"]\n')
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 2, err  # a configuration error, as every BE090
    assert "BE090" in err and "`files` glob 'lookups/*.csv' matches no file" in err, err
    assert "ev.yaml:" in err  # where to fix it


def test_a_glob_leaving_the_repository_is_refused(locked):
    declare(locked, '      files: ["../secrets/*"]\n')
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code != 0 and "not a glob relative to the repository root" in err, err


def test_labeling_functions_declare_files_too(labeled):
    env = labeled / "environments" / "ev.yaml"
    text = env.read_text()
    anchor = "      functions: rules/sign.py\n"
    assert anchor in text
    env.write_text(text.replace(anchor, anchor + '      files: ["rules/*.md"]\n'))
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 2 and "BE878" in err and "'rules/*.md' matches no file" in err, err
    (labeled / "rules" / "notes.md").write_text("the word list's origin\n")
    code, _, err = invoke_cli(["lock", "ev"], labeled)
    assert code == 0, err
    record = json.loads(lock_text(labeled))["labels"]["rules"]["source"]
    assert list(record["files_read"]) == ["rules/kinds.txt", "rules/notes.md"]
    (labeled / "rules" / "notes.md").write_text("changed\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], labeled)
    assert code == 1 and "code file rules/notes.md changed" in err, err


PEEKING = '''\
import os


def daily(ctx):
    df = ctx.read("events", columns=["kind", "x"])
    for kind in sorted(set(df["kind"])):
        os.path.exists("config/scale.yaml")
        try:
            open(f"lookup/SENTINEL-{kind}.txt").close()
        except OSError:
            pass
    with open("config/scale.yaml") as f:
        f.read()
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    return out.sort_values("kind").reset_index(drop=True)
'''


def test_over_restricted_data_a_missing_files_path_is_never_recorded(locked):
    """The path code tried to open may be made of restricted values: in an environment that
    restricts a dataset, only files that exist are pinned (and no file or output names the
    path)."""
    import pyarrow as pa

    pq.write_table(pa.table({"who": ["x"]}), locked / "data" / "people.parquet")
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("datasets:\n", "datasets:\n  people:\n    uri: "
                                           "data/people.parquet\n    columns:\n      who: "
                                           "{dtype: string}\n", 1)
                   + "privacy:\n  restricted: [people]\n")
    (locked / "transforms" / "daily.py").write_text(PEEKING)
    code, out, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    record = json.loads(lock_text(locked))["datasets"]["daily"]["derived"]
    assert list(record["files_read"]) == ["config/scale.yaml"]
    leaked = [p for p in locked.rglob("*") if p.is_file() and b"SENTINEL" in p.read_bytes()
              and p != locked / "transforms" / "daily.py"]
    assert not leaked and "SENTINEL" not in out + err, leaked
