"""Environment files: every error class with its exact file:line:col, code and message.

Each test writes a small repo (conftest.make_repo), runs `buildenv show ENV` in-process and pins
the diagnostics users read on stderr. Invalid environment files exit 2 (SPEC §6).
"""

from __future__ import annotations
import __future__

import importlib
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import BASE_YAML, REPO_ROOT, invoke_cli, write_repo


def show_errors(root: Path, env: str) -> list[str]:
    code, out, err = invoke_cli(["show", env], root)
    assert code == 2, (out, err)
    assert out == ""
    return err.splitlines()


def child(text: str) -> dict[str, str]:
    """A `child` environment extending `base`, with `text` appended."""
    return {"child": "name: child\nextends: base\n" + text}


# --- BE001 / BE002: the YAML itself ------------------------------------------------------

def test_yaml_syntax_error_points_at_the_token(tmp_path):
    root = write_repo(tmp_path, envs=child("datasets:\n  movies:\n    uri: a\n   bad: b\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:4: error[BE001]: invalid YAML: while parsing a block mapping "
        "expected <block end>, but found '<block mapping start>'",
    ]


def test_yaml_unclosed_quote(tmp_path):
    root = write_repo(tmp_path, envs=child('description: "unclosed\n'))
    assert show_errors(root, "child") == [
        "environments/child.yaml:4:1: error[BE001]: invalid YAML: while scanning a quoted scalar "
        "found unexpected end of stream",
    ]


def test_yaml_merge_keys_are_refused(tmp_path):
    root = write_repo(tmp_path, envs=child("<<: {description: x}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:3:1: error[BE001]: YAML merge keys (<<) are not supported; "
        "use `extends`",
    ]


def test_duplicate_key_nested(tmp_path):
    root = write_repo(tmp_path, envs=child("datasets:\n  movies:\n    uri: a.parquet\n"
                                           "    uri: b.parquet\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:5: error[BE002]: duplicate key 'uri' (first defined at line 5)",
        "  hint: remove one of the two entries",
    ]


def test_duplicate_top_level_key(tmp_path):
    root = write_repo(tmp_path, envs=child("name: child\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:3:1: error[BE002]: duplicate key 'name' (first defined at line 1)",
        "  hint: remove one of the two entries",
    ]


def test_file_that_is_not_a_mapping(tmp_path):
    root = write_repo(tmp_path, envs={"lonely": "- a\n- b\n"})
    assert show_errors(root, "lonely") == [
        "environments/lonely.yaml:1:1: error[BE004]: an environment file is a mapping of keys "
        "(name, datasets, ...)",
    ]


# --- BE003 unknown keys --------------------------------------------------------------------

@pytest.mark.parametrize("line", [3, 4, 7])
def test_unknown_top_level_key_reports_its_line(tmp_path, line):
    filler = "".join(f"# comment {i}\n" for i in range(line - 3))
    root = write_repo(tmp_path, envs=child(filler + "descripton: typo\n"))
    assert show_errors(root, "child") == [
        f"environments/child.yaml:{line}:1: error[BE003]: unknown key 'descripton'",
        "  hint: did you mean 'description'?",
    ]


def test_unknown_nested_key_with_did_you_mean(tmp_path):
    root = write_repo(tmp_path, envs=child("datasets:\n  movies:\n    urii: x.parquet\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:5:5: error[BE003]: unknown key 'urii' in datasets.movies",
        "  hint: did you mean 'uri'?",
    ]


def test_unknown_key_in_column(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n      genre: {nulable: true}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:15: error[BE003]: unknown key 'nulable' in "
        "datasets.movies.columns.genre",
        "  hint: did you mean 'nullable'?",
    ]


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path):
    root = write_repo(tmp_path, envs=child("serving:\n  zzz: 1\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:4:3: error[BE003]: unknown key 'zzz' in serving",
        "  hint: allowed keys: format, limits, ops, parity, requirements, stack, "
        "validate_inputs",
    ]


def test_unknown_key_in_onnx_serving_knows_onnx_fields(tmp_path):
    root = write_repo(tmp_path, envs=child("serving:\n  stack: onnx\n  opset: 17\n"
                                           "  ops: ['ai.onnx:*']\n  opsett: 3\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:7:3: error[BE003]: unknown key 'opsett' in serving",
        "  hint: did you mean 'opset'?",
    ]


# --- BE004 wrong type / BE005 missing --------------------------------------------------------

def test_wrong_type(tmp_path):
    root = write_repo(tmp_path, envs=child("serving:\n  ops: 3\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:4:3: error[BE004]: serving.ops: Input should be a valid list",
    ]


def test_wrong_literal_with_hint_and_wrong_bool(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n      x: {dtype: int}\n"
        "      y: {dtype: float64, nullable: maybe}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:11: error[BE004]: datasets.movies.columns.x.dtype: 'int' is "
        "not one of 'int8', 'int16', 'int32', 'int64', 'float32', 'float64', 'bool', 'string', "
        "'date' or 'timestamp'",
        "  hint: did you mean 'int8'?",
        "environments/child.yaml:7:27: error[BE004]: datasets.movies.columns.y.nullable: Input "
        "should be a valid boolean, unable to interpret input",
    ]


def test_a_number_where_text_is_expected_is_told_to_be_quoted(tmp_path):
    """Annotator ids are often numbers (Label Studio's `completed_by`): YAML reads them so."""
    root = write_repo(tmp_path, envs=child("privacy:\n  annotators: [101, ann]\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:4:16: error[BE004]: privacy.annotators.0: Input should be a "
        "valid string",
        '  hint: YAML reads 101 as a number; write it in quotes: "101"',
    ]


def test_unknown_serving_stack(tmp_path):
    root = write_repo(tmp_path, envs=child("serving: {stack: tensorflow}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:3:1: error[BE004]: serving: unknown serving stack 'tensorflow'; "
        "expected 'sklearn', 'onnx'",
    ]


def test_extends_must_be_a_name(tmp_path):
    root = write_repo(tmp_path, envs={"child": "name: child\nextends: 3\n"})
    assert show_errors(root, "child") == [
        "environments/child.yaml:2:1: error[BE004]: extends takes an environment name",
    ]


def test_missing_key_in_new_dataset(tmp_path):
    root = write_repo(tmp_path, envs=child("datasets:\n  extra:\n    uri: data/x.parquet\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:4:3: error[BE005]: missing key 'columns' in datasets.extra",
    ]


def test_missing_top_level_keys_name_the_file(tmp_path):
    root = write_repo(tmp_path, envs={"lonely": "description: nothing else\n"})
    assert show_errors(root, "lonely") == [
        "environments/lonely.yaml:1:1: error[BE005]: missing key 'datasets'",
        "environments/lonely.yaml:1:1: error[BE005]: missing key 'name' (it must be 'lonely', "
        "the file stem)",
    ]


def test_missing_dtype(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n      extra: {nullable: true}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:7: error[BE005]: missing key 'dtype' in "
        "datasets.movies.columns.extra",
    ]


# --- BE006 / BE007 / BE008: names and chains -----------------------------------------------------

def test_name_must_equal_stem(tmp_path):
    root = write_repo(tmp_path, envs={"child": "name: kid\nextends: base\n"})
    assert show_errors(root, "child") == [
        "environments/child.yaml:1:1: error[BE006]: name 'kid' does not match the file name "
        "'child.yaml'",
        "  hint: set `name: child` or rename the file to kid.yaml",
    ]


def test_unknown_parent_names_every_file_of_the_chain(tmp_path):
    root = write_repo(tmp_path, envs={"child": "name: child\nextends: mid\n",
                                      "mid": "name: mid\nextends: bsae\n"})
    assert show_errors(root, "child") == [
        "environments/mid.yaml:2:1: error[BE007]: unknown parent 'bsae': no "
        "environments/bsae.yaml (chain: environments/child.yaml -> environments/mid.yaml)",
        "  hint: did you mean 'base'?",
    ]


def test_cycle_names_every_file(tmp_path):
    root = write_repo(tmp_path, envs={"a": "name: a\nextends: b\n", "b": "name: b\nextends: c\n",
                                      "c": "name: c\n\nextends: a\n"})
    assert show_errors(root, "a") == [
        "environments/c.yaml:3:1: error[BE008]: extends cycle: environments/a.yaml -> "
        "environments/b.yaml -> environments/c.yaml -> environments/a.yaml",
        "  hint: remove `extends` from one environment of the cycle",
    ]


def test_self_cycle(tmp_path):
    root = write_repo(tmp_path, envs={"a": "name: a\nextends: a\n"})
    assert show_errors(root, "a") == [
        "environments/a.yaml:2:1: error[BE008]: extends cycle: environments/a.yaml -> "
        "environments/a.yaml",
        "  hint: remove `extends` from one environment of the cycle",
    ]


# --- BE009 / BE010: references --------------------------------------------------------------------

def test_unknown_dataset_in_label_and_privacy(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "label: {dataset: ratingz}\nprivacy: {restricted: [ratings, userz]}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:3:9: error[BE009]: label: unknown dataset 'ratingz'",
        "  hint: did you mean 'ratings'?",
        "environments/child.yaml:4:33: error[BE009]: privacy.restricted: unknown dataset 'userz'",
    ]


def test_unknown_column_in_label_and_monitoring(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "label: {column: likd}\nmonitoring: {drift: {columns: {genree: {linf: 0.1}}}}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:3:9: error[BE010]: label: unknown column 'likd' in dataset "
        "'ratings'",
        "  hint: did you mean 'liked'?",
        "environments/child.yaml:4:32: error[BE010]: monitoring.drift.columns: unknown column "
        "'genree'",
        "  hint: did you mean 'genre'?",
    ]


def test_deleting_a_referenced_column_breaks_the_inherited_reference(tmp_path):
    """Removing `genre` with null leaves the parent's monitoring override dangling: the child
    broke it, so the error is at the child's `null`, and a hint points at the parent line that
    still names it."""
    root = write_repo(tmp_path, envs=child("datasets:\n  movies:\n    columns:\n"
                                           "      genre: null\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:7: error[BE010]: monitoring.drift.columns: unknown column "
        "'genre'",
        "  hint: datasets.movies.columns.genre is deleted here (`genre: null`), but "
        "environments/base.yaml:26:7 (inherited) still refers to it: keep it, or override that "
        "reference here",
    ]


def test_a_child_changing_a_dtype_is_blamed_with_the_inherited_line(tmp_path):
    """A child that changes a column's dtype so that the parent's domain (or range) no longer
    fits: the error is at the child's `dtype`, the hint at the parent's `domain`."""
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n      genre: {dtype: int32}\n"
        "      runtime_minutes: {dtype: string}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:15: error[BE012]: datasets.movies.columns.genre: domain value "
        "'comedy' is not an int32",
        "  hint: `dtype: int32` is set here, in environments/child.yaml; the `domain` it "
        "conflicts with is inherited from environments/base.yaml:10:47: change `dtype`, or "
        "override `domain` here (`domain: null` drops it)",
        "environments/child.yaml:7:25: error[BE011]: datasets.movies.columns.runtime_minutes: a "
        "string column takes no range (use domain)",
        "  hint: `dtype: string` is set here, in environments/child.yaml; the `range` it "
        "conflicts with is inherited from environments/base.yaml:11:41: change `dtype`, or "
        "override `range` here (`range: null` drops it)",
    ]
    # the same keys in one file: reported where they are, no hint about inheritance
    root = write_repo(tmp_path, envs={"base": BASE_YAML.replace(
        "genre: {dtype: string,", "genre: {dtype: int32,")})
    assert show_errors(root, "base")[:1] == [
        "environments/base.yaml:10:46: error[BE012]: datasets.movies.columns.genre: domain value "
        "'comedy' is not an int32"]


# --- BE011 / BE012: ranges and domains ------------------------------------------------------------

def test_bad_ranges(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n"
        "      runtime_minutes: {range: [600, 1]}\n"
        "      critic_score: {range: [a, b]}\n"
        "      genre: {range: [1, 2]}\n"
        "      released: {dtype: date, range: ['2026-01-01', 'not a date']}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:25: error[BE011]: datasets.movies.columns.runtime_minutes: "
        "range [600, 1] is empty: the first bound must not exceed the second",
        "environments/child.yaml:7:22: error[BE011]: datasets.movies.columns.critic_score: "
        "range of a float64 column takes two numbers (or null for an open end)",
        "environments/child.yaml:8:15: error[BE011]: datasets.movies.columns.genre: a string "
        "column takes no range (use domain)",
        "environments/child.yaml:9:31: error[BE011]: datasets.movies.columns.released: range of "
        "a date column takes two ISO 8601 strings (or null for an open end)",
    ]


def test_bad_domains(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n"
        "      genre: {domain: [comedy, 2]}\n"
        "      released: {dtype: date, domain: ['2026-01-01']}\n"
        "      movie_id: {domain: [1, 1]}\n"
        "      flag: {dtype: bool, domain: [true, 'yes']}\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:6:15: error[BE012]: datasets.movies.columns.genre: domain value "
        "2 is not a string",
        "environments/child.yaml:7:31: error[BE012]: datasets.movies.columns.released: a "
        "date column takes no domain (use range)",
        "environments/child.yaml:8:18: error[BE012]: datasets.movies.columns.movie_id: domain "
        "lists a value twice",
        "environments/child.yaml:9:27: error[BE012]: datasets.movies.columns.flag: domain value "
        "'yes' is not a bool",
    ]


def test_valid_temporal_range_and_bool_domain_pass(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n"
        "      released: {dtype: date, range: ['2020-01-01', '2026-12-31']}\n"
        "      seen: {dtype: timestamp, range: ['2025-01-01T00:00:00Z', 2026-01-01]}\n"
        "      flag: {dtype: bool, domain: [true, false]}\n"))
    code, out, err = invoke_cli(["show", "child"], root)
    assert (code, err) == (0, "")
    assert "released:" in out and "flag:" in out


# --- BE013 versions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 99, 0])
def test_unsupported_schema_version(tmp_path, version):
    root = write_repo(tmp_path, envs={"child": f"name: child\nextends: base\nschema: {version}\n"})
    hint = ("upgrade buildenv to read this file" if version > 1 else
            "rewrite the file in the current format and set `schema: 1`")
    assert show_errors(root, "child") == [
        f"environments/child.yaml:3:1: error[BE013]: unsupported schema version {version} "
        "(this buildenv supports 1)",
        f"  hint: {hint}",
    ]


def test_schema_version_must_be_a_number(tmp_path):
    root = write_repo(tmp_path, envs=child("schema: one\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:3:1: error[BE004]: schema: 'one' is not one of 1",
    ]


def test_unsupported_schema_in_parent_points_at_parent(tmp_path):
    root = write_repo(tmp_path, envs={"base": BASE_YAML.replace("schema: 1", "schema: 2")})
    assert show_errors(root, "child") == [
        "environments/base.yaml:1:1: error[BE013]: unsupported schema version 2 "
        "(this buildenv supports 1)",
        "  hint: upgrade buildenv to read this file",
    ]


# --- BE014 / BE015 / BE018 ----------------------------------------------------------------------

def test_unknown_environment(repo):
    assert show_errors(repo, "nope") == [
        "buildenv: error[BE014]: unknown environment 'nope'",
        "  hint: `buildenv envs` lists the environments",
    ]
    assert show_errors(repo, "chlid") == [
        "buildenv: error[BE014]: unknown environment 'chlid'",
        "  hint: did you mean 'child'?",
    ]


def test_uri_escaping_the_root_and_bad_schemes(tmp_path):
    root = write_repo(tmp_path / "repo", envs=child(
        "datasets:\n  movies:\n    uri: ../../x.parquet\n  ratings:\n"
        "    uri: ftp://host/x.parquet\n"))
    outside = (tmp_path / "repo" / "../../x.parquet").resolve()
    assert show_errors(root, "child") == [
        f"environments/child.yaml:5:5: error[BE015]: dataset 'movies': uri '../../x.parquet' "
        f"resolves outside the repository ({outside})",
        "  hint: keep data inside the repository, or use an absolute file:// uri",
        "environments/child.yaml:7:5: error[BE018]: dataset 'ratings': unsupported uri scheme "
        "'ftp://'",
        "  hint: use a repository-relative path, file://, s3:// or gs://",
    ]


def test_bucketless_s3_uri(tmp_path):
    root = write_repo(tmp_path, envs=child("datasets:\n  movies:\n    uri: s3:///key.parquet\n"))
    assert show_errors(root, "child") == [
        "environments/child.yaml:5:5: error[BE018]: dataset 'movies': uri 's3:///key.parquet' "
        "names no bucket",
        "  hint: use s3://bucket/key",
    ]


def test_remote_and_file_uris_are_accepted(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    uri: s3://bucket/movies.parquet\n"
        "  ratings:\n    uri: file:///srv/ratings.parquet\n"))
    code, out, err = invoke_cli(["show", "child", "--format", "json"], root)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["datasets"]["movies"]["uri"] == "s3://bucket/movies.parquet"
    assert doc["datasets"]["ratings"]["uri"] == "file:///srv/ratings.parquet"


# --- inheritance of errors and reporting all at once ---------------------------------------------

def test_error_inherited_from_parent_points_at_parent(tmp_path):
    root = write_repo(tmp_path, envs={"base": BASE_YAML.replace(
        "  stack: sklearn\n", "  stack: sklearn\n  extra: 1\n")})
    expected = [
        "environments/base.yaml:21:3: error[BE003]: unknown key 'extra' in serving",
        "  hint: allowed keys: format, limits, ops, parity, requirements, stack, "
        "validate_inputs",
    ]
    assert show_errors(root, "child") == expected
    assert show_errors(root, "base") == expected


def test_every_problem_at_once_sorted_by_file_and_line(tmp_path):
    grandchild = ("name: grandchild\nextends: child\n"
                  "label: {column: likd}\n"            # line 3
                  "datasets:\n  movies:\n    urii: x\n"  # line 6
                  "descripton: typo\n")                # line 7
    root = write_repo(tmp_path, envs={
        "base": BASE_YAML.replace("  restricted: [ratings]", "  restricted: [ratingz]"),
        "child": "name: kid\nextends: base\n",
        "grandchild": grandchild,
    })
    lines = show_errors(root, "grandchild")
    heads = [line for line in lines if not line.startswith("  hint:")]
    assert heads == [
        "environments/base.yaml:28:16: error[BE009]: privacy.restricted: unknown dataset "
        "'ratingz'",
        "environments/child.yaml:1:1: error[BE006]: name 'kid' does not match the file name "
        "'child.yaml'",
        "environments/grandchild.yaml:3:9: error[BE010]: label: unknown column 'likd' in "
        "dataset 'ratings'",
        "environments/grandchild.yaml:6:5: error[BE003]: unknown key 'urii' in datasets.movies",
        "environments/grandchild.yaml:7:1: error[BE003]: unknown key 'descripton'",
    ]


def test_validate_and_lock_report_environment_errors_with_exit_2(tmp_path):
    root = write_repo(tmp_path, envs=child("descripton: typo\n"))
    for args in (["validate", "child"], ["lock", "child"], ["check", "demo", "--env", "child"],
                 ["build", "demo", "--env", "child", "--no-register"]):
        code, _, err = invoke_cli(args, root)
        assert code == 2, args
        assert err.splitlines()[0] == ("environments/child.yaml:3:1: error[BE003]: unknown key "
                                       "'descripton'")


# --- buildenv schema ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def file_schema() -> dict:
    code, out, err = invoke_cli(["schema"], REPO_ROOT)
    assert (code, err) == (0, "")
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _errors(schema: dict, doc: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [e.message for e in validator.iter_errors(doc)]


def test_schema_is_draft_2020_12(file_schema):
    assert file_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert file_schema["title"] == "buildenv environment"


EXAMPLE_ENVS = sorted((REPO_ROOT / "environments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLE_ENVS, ids=lambda p: p.stem)
def test_every_example_environment_validates(file_schema, path):
    assert _errors(file_schema, yaml.safe_load(path.read_text())) == []


def test_example_set_is_not_empty():
    assert len(EXAMPLE_ENVS) >= 3


@pytest.mark.parametrize("path", EXAMPLE_ENVS, ids=lambda p: p.stem)
def test_unknown_key_fails_schema_validation(file_schema, path):
    doc = yaml.safe_load(path.read_text())
    doc["descripton"] = "typo"
    assert _errors(file_schema, doc), "an unknown top-level key must fail"
    nested = yaml.safe_load(path.read_text())
    nested.setdefault("datasets", {}).setdefault("movies", {})["urii"] = "x"
    assert _errors(file_schema, nested), "an unknown nested key must fail"


def test_schema_partial_overlay_rules(file_schema):
    # a child may write only what it changes, and null deletes inherited keys and entries
    child_doc = {"name": "c", "extends": "p", "datasets": {"movies": {"columns": {
        "genre": None, "x": {"serving": True}}}}, "monitoring": {"drift": {"columns": {
            "genre": None}}}, "label": None}
    assert _errors(file_schema, child_doc) == []
    # a root file must be complete
    assert _errors(file_schema, {"name": "root"}) == ["'datasets' is a required property"]
    # and a root cannot use null to delete
    assert _errors(file_schema, {"name": "r", "datasets": {}, "monitoring": None}) != []
    # wrong types fail in both
    assert _errors(file_schema, {"name": "c", "extends": "p", "serving": {"ops": 3}}) != []


def test_resolved_schema_validates_every_resolved_example():
    code, out, err = invoke_cli(["schema", "--resolved"], REPO_ROOT)
    assert (code, err) == (0, "")
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in EXAMPLE_ENVS:
        code, out, err = invoke_cli(["show", path.stem, "--format", "json"], REPO_ROOT)
        assert (code, err) == (0, ""), path
        assert _errors(schema, json.loads(out)) == [], path


def test_schema_fields_carry_descriptions(file_schema):
    column = file_schema["$defs"]["Column"]["properties"]
    assert all(prop.get("description") for prop in column.values())


# --- start-up: the modules of models keep their annotations evaluated -------------------------

MODEL_MODULES = ["buildenv.core.project", "buildenv.env.spec_base", "buildenv.env.spec",
                 "buildenv.env.evaluation_spec", "buildenv.env.monitoring_spec",
                 "buildenv.env.privacy_spec", "buildenv.env.serving_spec", "buildenv.env.sources"]


@pytest.mark.parametrize("name", MODEL_MODULES)
def test_model_modules_do_not_postpone_annotations(name: str) -> None:
    """With `from __future__ import annotations` pydantic compiles and evaluates the text of
    every field's annotation as it makes each model class: ~4 ms of every command that reads
    an environment (bench/README.md, "Session 9 (h72)")."""
    module = importlib.import_module(name)
    assert getattr(module, "annotations", None) is not __future__.annotations, name
    models = [v for v in vars(module).values()
              if isinstance(v, type) and v.__module__ == name and hasattr(v, "model_fields")]
    assert models, name
    for model in models:  # the annotations pydantic reads are types, not text to evaluate
        assert all(not isinstance(f.annotation, str) for f in model.model_fields.values()), model
