"""The privacy policy of private releases in the environment format: epsilon budgets, privacy
units, the peek policy and synthetic provenance, all tightened-only along `extends`."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import BASE_YAML, invoke_cli, write_repo

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse, canonical_environment
from buildenv.env.spec import json_schema

POLICY = """\
  epsilon_budget: 3.0
  units: {ratings: {key: movie_id, max_rows: 5}}
  peek: {actors: [alice, bob]}
  annotators: [ann1, ann2]
"""
BASE_WITH_POLICY = BASE_YAML + POLICY  # privacy: is BASE_YAML's last section


def resolve(root, name):
    return Multiverse(Project.discover(root)).resolve(name)


def test_new_keys_are_optional_and_leave_digests_alone(tmp_path):
    root = write_repo(tmp_path)
    env = resolve(root, "base").env
    assert env.privacy.epsilon_budget is None and env.privacy.budget("ratings") == 0.0
    assert env.privacy.peek.actors == [] and env.privacy.units == {} \
        and env.privacy.synthetic == {}
    assert canonical_environment(env)["privacy"] == {"restricted": ["ratings"]}


def test_budget_is_one_number_for_each_restricted_dataset_or_a_mapping(tmp_path):
    root = write_repo(tmp_path, envs={"base": BASE_WITH_POLICY, "mapped": (
        "name: mapped\nextends: base\nprivacy:\n  epsilon_budget: {ratings: 1.5}\n"
        "  restricted: [ratings, movies]\n")})
    base = resolve(root, "base").env.privacy
    assert base.budget("ratings") == 3.0 and base.budget("movies") == 3.0
    mapped = resolve(root, "mapped").env.privacy
    assert mapped.budget("ratings") == 1.5 and mapped.budget("movies") == 0.0


def test_schema_documents_the_new_keys():
    privacy = json_schema()["$defs"]["Privacy"]["properties"]
    for key in ("epsilon_budget", "budget_per_version", "units", "peek", "synthetic"):
        assert key in privacy and privacy[key].get("description"), key


@pytest.mark.parametrize("privacy, needle, message", [
    ("  epsilon_budget: 3.5\n", "epsilon_budget",
     "privacy.epsilon_budget: 3.5 for dataset 'ratings' is more than 3 in base: a budget may "
     "be lowered, not raised"),
    ("  epsilon_budget: {ratings: 4}\n", "ratings: 4",
     "privacy.epsilon_budget: 4 for dataset 'ratings' is more than 3 in base: a budget may be "
     "lowered, not raised"),
    ("  peek: {actors: [alice, mallory]}\n", "peek",
     "privacy.peek.actors: mallory may not peek in base; a child may shrink the list of actors "
     "who see real rows, never widen it"),
    ("  annotators: [ann1, eve]\n", "annotators",
     "privacy.annotators: eve may not be sent examples of base's restricted data; a child may "
     "shrink the list of annotators who see them, never widen it"),
    ("  units: {ratings: {key: liked, max_rows: 5}}\n", "units",
     "privacy.units.ratings: a person is identified by 'movie_id' in base; the child must keep "
     "that unit (otherwise a release would protect a row, not a person)"),
    ("  units: {ratings: null}\n", "units",
     "privacy.units.ratings: a person is identified by 'movie_id' in base; the child must keep "
     "that unit (otherwise a release would protect a row, not a person)"),
    ("  budget_per_version: [ratings]\n", "budget_per_version",
     "privacy.budget_per_version: ratings share one budget over every version in base; a "
     "child may not give each version a fresh one"),
])
def test_a_child_cannot_loosen_the_release_policy(tmp_path, privacy, needle, message):
    text = f"name: loose\nextends: base\nprivacy:\n{privacy}"
    root = write_repo(tmp_path, envs={"base": BASE_WITH_POLICY, "loose": text})
    code, out, err = invoke_cli(["show", "loose"], root)
    assert (code, out) == (2, "")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if needle in t)
    first = err.splitlines()[0]
    assert first.startswith(f"environments/loose.yaml:{line}:"), err
    assert first.endswith(f"error[BE019]: {message}"), err


def test_a_child_may_tighten_the_release_policy(tmp_path):
    root = write_repo(tmp_path, envs={"base": BASE_WITH_POLICY, "tight": (
        "name: tight\nextends: base\nprivacy:\n  epsilon_budget: {ratings: 0.5}\n"
        "  peek: {actors: [alice]}\n  units: {ratings: {key: movie_id, max_rows: 2}}\n"
        "  annotators: [ann2]\n")})
    privacy = resolve(root, "tight").env.privacy
    assert privacy.budget("ratings") == 0.5 and privacy.peek.actors == ["alice"]
    assert privacy.annotators == ["ann2"]
    assert privacy.units["ratings"].max_rows == 2


def test_a_budget_cannot_appear_below_a_parent_without_one(tmp_path):
    root = write_repo(tmp_path, envs={"loose": (
        "name: loose\nextends: base\nprivacy:\n  epsilon_budget: 1.0\n")})
    code, _, err = invoke_cli(["show", "loose"], root)
    assert code == 2 and "error[BE019]: privacy.epsilon_budget: 1 for dataset 'ratings' is " \
        "more than 0 in base" in err


@pytest.mark.parametrize("privacy, code, message", [
    ("  epsilon_budget: {ratingz: 1}\n", "BE009", "privacy.epsilon_budget: unknown dataset "
     "'ratingz'"),
    ("  units: {ratings: {key: user, max_rows: 3}}\n", "BE010", "privacy.units.ratings.key: "
     "unknown column 'user' in dataset 'ratings'"),
    ("  units: {ratings: {key: movie_id, max_rows: 0}}\n", "BE004", "privacy.units.ratings."
     "max_rows: Input should be greater than or equal to 1"),
    ("  budget_per_version: [nope]\n", "BE009", "privacy.budget_per_version: unknown dataset "
     "'nope'"),
    ("  epsilon_budget: -1\n", "BE004", "privacy.epsilon_budget"),
])
def test_bad_policy_keys(tmp_path, privacy, code, message):
    root = write_repo(tmp_path, envs={"base": BASE_YAML + privacy})
    exit_code, _, err = invoke_cli(["show", "base"], root)
    assert exit_code == 2
    assert f"error[{code}]: {message}" in err, err


# --- un-restricting needs a synthetic stand-in with provenance ----------------------------------

def _provenance(uri: str, digest: str = "sha256:" + "ab" * 32) -> str:
    return (f"  synthetic:\n    ratings:\n      uri: {uri}\n      digest: {digest}\n"
            "      source: {environment: base, dataset: ratings, digest: sha256:"
            + "cd" * 32 + "}\n      method: mst\n      epsilon: 1.0\n      seed: 0\n"
            "      rows: 60\n")


def test_a_hand_written_child_cannot_unrestrict(tmp_path):
    root = write_repo(tmp_path, envs={"open": (
        "name: open\nextends: base\nprivacy:\n  restricted: []\n")})
    code, _, err = invoke_cli(["show", "open"], root)
    assert code == 2
    assert "error[BE019]: privacy.restricted: dataset 'ratings' is restricted in base" in err
    assert "hint: for data without people in it, generate a synthetic stand-in: `buildenv " \
        "synth base --dataset ratings --rows N`" in err


def test_provenance_pointing_at_the_real_data_does_not_unrestrict(tmp_path):
    root = write_repo(tmp_path, envs={"open": (
        "name: open\nextends: base\nprivacy:\n  restricted: []\n"
        + _provenance("data/ratings.parquet"))})
    code, _, err = invoke_cli(["show", "open"], root)
    assert code == 2 and "error[BE019]" in err


def test_provenance_must_name_the_file_the_dataset_reads(tmp_path):
    root = write_repo(tmp_path, envs={"open": (
        "name: open\nextends: base\ndatasets:\n  ratings:\n    uri: data/fake.parquet\n"
        "privacy:\n  restricted: []\n" + _provenance("data/other.parquet"))})
    code, _, err = invoke_cli(["show", "open"], root)
    assert code == 2
    assert "error[BE820]: privacy.synthetic.ratings.uri is 'data/other.parquet' but dataset " \
        "'ratings' reads 'data/fake.parquet'" in err


def test_a_forged_provenance_on_a_copy_of_real_data_fails_the_lock(tmp_path):
    """The resolver accepts the shape; the bytes do not: lock and build refuse (BE821)."""
    root = write_repo(tmp_path)
    shutil.copy(root / "data" / "ratings.parquet", root / "data" / "copy.parquet")
    import hashlib

    digest = "sha256:" + hashlib.sha256((root / "data" / "copy.parquet").read_bytes()).hexdigest()
    (root / "environments" / "open.yaml").write_text(
        "name: open\nextends: base\ndatasets:\n  ratings:\n    uri: data/copy.parquet\n"
        "privacy:\n  restricted: []\n" + _provenance("data/copy.parquet", digest))
    assert resolve(root, "open").env.privacy.restricted == []
    code, out, err = invoke_cli(["lock", "open"], root)
    assert code == 2 and not (root / "environments" / "open.lock.json").exists()
    assert "error[BE821]: dataset 'ratings': data/copy.parquet carries no synthetic provenance " \
        "(it was not written by `buildenv synth`)" in err
    # a digest that is not the file's is caught first
    text = (root / "environments" / "open.yaml").read_text().replace(digest, "sha256:" + "ee" * 32)
    (root / "environments" / "open.yaml").write_text(text)
    code, _, err = invoke_cli(["lock", "open"], root)
    assert code == 2 and f"has digest {digest}, not the sha256:{'ee' * 32}" in err


def test_envs_and_show_render_the_policy(tmp_path):
    root = write_repo(tmp_path, envs={"base": BASE_WITH_POLICY})
    code, out, err = invoke_cli(["show", "base", "--format", "json"], root)
    assert code == 0, err
    privacy = json.loads(out)["privacy"]
    assert privacy["epsilon_budget"] == 3.0 and privacy["peek"] == {"actors": ["alice", "bob"]}
