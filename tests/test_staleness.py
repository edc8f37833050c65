"""Lock staleness (`data.lock.staleness.check_lock`), unit by unit: what a build refuses and what
it says to run, located at the environment's YAML line. The CLI tests see its text; these see
each rule, its code, its severity and the lock it returns."""

from __future__ import annotations

import os

import pytest
from conftest import BASE_YAML, movies_table, write_parquet, write_repo

from buildenv.core.project import Project
from buildenv.data.lock.staleness import check_lock
from buildenv.env.resolve import Multiverse
from buildenv.labels.locking import lock_environments


@pytest.fixture
def locked(tmp_path):
    root = write_repo(tmp_path / "repo")
    multiverse = Multiverse(Project.discover(root))
    _, problems = lock_environments(multiverse, ["base", "child"])
    assert problems == []
    return root


def check(root, name="base", **kwargs):
    multiverse = Multiverse(Project.discover(root))
    return check_lock(multiverse, multiverse.resolve(name), **kwargs)


def codes(problems):
    return [(p.code, p.severity.value) for p in problems]


def test_a_current_lock_is_returned_without_problems(locked):
    lock, problems = check(locked)
    assert problems == [] and lock is not None
    assert set(lock.datasets) == {"movies", "ratings"}


def test_no_lock_is_be050_and_says_what_to_run(locked):
    (locked / "environments" / "child.lock.json").unlink()
    lock, problems = check(locked, "child")
    assert lock is None and codes(problems) == [("BE050", "error")]
    assert problems[0].hints == ("run `buildenv lock child`",)
    assert problems[0].path == "environments/child.yaml"


@pytest.mark.parametrize("edit, message", [
    (("uri: data/movies.parquet", "uri: data/movies-v2.parquet"),
     "dataset 'movies' uri changed: lock has 'data/movies.parquet', environment has "
     "'data/movies-v2.parquet'"),
    (("      liked: {dtype: bool, nullable: false}\n",
      "      liked: {dtype: bool, nullable: false}\n  extra:\n    uri: data/movies.parquet\n"
      "    columns:\n      movie_id: {dtype: int64}\n"),
     "dataset 'extra' is not in the lock"),
])
def test_a_declaration_the_lock_does_not_pin_is_be052(locked, edit, message):
    path = locked / "environments" / "base.yaml"
    path.write_text(BASE_YAML.replace(*edit))
    lock, problems = check(locked)
    assert lock is None and codes(problems) == [("BE052", "error")]
    assert problems[0].message == message
    assert problems[0].path == "environments/base.yaml" and problems[0].line is not None


def test_a_dataset_no_longer_declared_is_be052_at_the_lock_file(locked):
    text = BASE_YAML.replace("  ratings:\n    uri: data/ratings.parquet\n    columns:\n"
                             "      movie_id: {dtype: int64, nullable: false}\n"
                             "      liked: {dtype: bool, nullable: false}\n", "")
    text = text.replace("label: {dataset: ratings, column: liked, classes: [false, true]}\n", "")
    text = text.replace("privacy:\n  restricted: [ratings]\n", "")
    (locked / "environments" / "base.yaml").write_text(text)
    lock, problems = check(locked)
    assert lock is None and codes(problems) == [("BE052", "error")]
    assert problems[0].message == ("lock pins dataset 'ratings', which environment 'base' no "
                                   "longer declares")
    assert problems[0].path == "environments/base.lock.json"


def test_an_older_environment_record_with_current_pins_is_a_warning(locked):
    """Columns changed, data did not: builds proceed on the lock; `lock` refreshes it."""
    (locked / "environments" / "base.yaml").write_text(
        BASE_YAML.replace("range: [1, 600]", "range: [1, 700]"))
    lock, problems = check(locked)
    assert lock is not None and codes(problems) == [("BE052", "warning")]
    assert "records an older version of the environment (its data pins still match)" in \
        problems[0].message


def test_changed_bytes_are_be051_with_the_digests(locked):
    write_parquet(locked / "data" / "movies.parquet", movies_table(99))
    lock, problems = check(locked)
    assert lock is None and codes(problems) == [("BE051", "error")]
    assert problems[0].message.startswith("dataset 'movies' changed since it was locked: sha256:")
    assert "buildenv drift base --dataset movies --against data/movies.parquet" in \
        problems[0].hints[0]


def test_without_verify_data_the_bytes_are_not_read(locked):
    write_parquet(locked / "data" / "movies.parquet", movies_table(99))
    lock, problems = check(locked, verify_data=False)
    assert lock is not None and problems == []


def test_a_missing_file_is_be053(locked):
    os.remove(locked / "data" / "ratings.parquet")
    lock, problems = check(locked)
    assert lock is None and codes(problems) == [("BE053", "error")]
    assert problems[0].message == "dataset 'ratings': 'data/ratings.parquet' not found"
