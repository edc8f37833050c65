"""The column vocabulary of issue #12: open ranges, float domains, `max_violation_fraction`,
`unique`, `pattern`, `length`, `monitor`. Bad declarations are diagnosed at their YAML line
(exit 2); data beyond the tolerance fails naming column, constraint, count and fraction (exit
1), within it warns (exit 0); restricted datasets never show a value; results are cached by a
digest that covers the new keys; unique and `monitor: false` columns are left out of drift.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli, kept_copy_of_data, write_parquet, write_repo

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse, environment_digest
from buildenv.labels.locking import lock_environments

SENTINEL = "QZSENTINEL42"
SENTINEL_ID = 918273645


def child(text: str) -> dict[str, str]:
    return {"child": "name: child\nextends: base\n" + text}


def errors(root: Path, env: str, command: str = "show") -> list[str]:
    code, out, err = invoke_cli([command, env], root)
    assert code == 2, (out, err)
    return err.splitlines()


# --- bad declarations: every one at its YAML line, all at once, exit 2 --------------------------

def test_bad_declarations_are_located_at_their_keys(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n"
        "      runtime_minutes: {range: [null, null]}\n"                            # line 6
        "      critic_score: {range: [0, null], max_violation_fraction: 1.5}\n"     # line 7
        "      genre: {pattern: '(?<=a)b', length: [3, 1]}\n"                       # line 8
        "      movie_id: {length: [1, 2], domain: [1.5]}\n"                         # line 9
        "      flag: {dtype: bool, unique: true}\n"                                 # line 10
        "      f2: {dtype: float32, domain: [0.5, .nan]}\n"                         # line 11
        "      f3: {dtype: float64, max_violation_fraction: 0.1}\n"                 # line 12
        "      f4: {dtype: string, length: [-1, null]}\n"                           # line 13
        "      f5: {dtype: int64, pattern: 'a'}\n"                                  # line 14
        "      f6: {dtype: string, pattern: '(a)\\1'}\n"                            # line 15
        "      f7: {dtype: float64, max_violation_fraction: -0.1, range: [0, 1]}\n"))  # 16
    assert errors(root, "child") == [
        "environments/child.yaml:6:25: error[BE011]: datasets.movies.columns.runtime_minutes: "
        "range [null, null] bounds nothing: give at least one end",
        "environments/child.yaml:7:40: error[BE004]: datasets.movies.columns.critic_score."
        "max_violation_fraction: Input should be less than or equal to 1",
        "environments/child.yaml:8:15: error[BE035]: datasets.movies.columns.genre: pattern "
        "'(?<=a)b' does not compile as RE2: invalid perl operator: (?<=",
        "environments/child.yaml:8:35: error[BE036]: datasets.movies.columns.genre: length "
        "[3, 1] is empty: the first bound must not exceed the second",
        "environments/child.yaml:9:18: error[BE036]: datasets.movies.columns.movie_id: a int64 "
        "column takes no length (lengths apply to strings)",
        "environments/child.yaml:9:34: error[BE012]: datasets.movies.columns.movie_id: domain "
        "value 1.5 is not an int64",
        "environments/child.yaml:10:27: error[BE038]: datasets.movies.columns.flag: a bool "
        "column cannot be unique (it has two values); declare a domain instead",
        "environments/child.yaml:11:28: error[BE012]: datasets.movies.columns.f2: domain value "
        "nan is not a finite number",
        "environments/child.yaml:12:28: error[BE037]: datasets.movies.columns.f3: "
        "max_violation_fraction tolerates violations of range, domain, pattern, length or "
        "unique, and this column declares none of them",
        "environments/child.yaml:13:36: error[BE004]: datasets.movies.columns.f4.length.0: "
        "Input should be greater than or equal to 0",
        "environments/child.yaml:14:26: error[BE035]: datasets.movies.columns.f5: a int64 "
        "column takes no pattern (patterns apply to strings)",
        "environments/child.yaml:15:27: error[BE035]: datasets.movies.columns.f6: pattern "
        "'(a)\\\\1' does not compile as RE2: invalid escape sequence: \\1",
        "environments/child.yaml:16:28: error[BE004]: datasets.movies.columns.f7."
        "max_violation_fraction: Input should be greater than or equal to 0",
    ]


def test_validate_refuses_a_bad_declaration_before_reading_data(tmp_path):
    root = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n      genre: {pattern: '[unclosed'}\n"))
    [line] = errors(root, "child", "validate")
    assert line.startswith("environments/child.yaml:6:15: error[BE035]: ")
    assert "missing ]: [unclosed" in line


def test_the_new_keys_are_inherited_and_overridable_through_extends(tmp_path):
    root = write_repo(tmp_path, envs={
        "keys": "name: keys\nextends: base\ndatasets:\n  movies:\n    columns:\n"
                "      movie_id: {unique: true}\n"
                "      genre: {pattern: '^[a-z]+$', length: [null, 10], monitor: false}\n"
                "      runtime_minutes: {range: [1, null], max_violation_fraction: 0.1}\n",
        "leaf": "name: leaf\nextends: keys\ndatasets:\n  movies:\n    columns:\n"
                "      genre: {length: null}\n"})
    multiverse = Multiverse(Project(root))
    leaf = multiverse.resolve("leaf").env.datasets["movies"].columns
    assert leaf["movie_id"].unique and leaf["genre"].pattern == "^[a-z]+$"
    assert leaf["genre"].length is None and leaf["genre"].monitor is False
    assert leaf["runtime_minutes"].range == (1, None)
    assert leaf["runtime_minutes"].max_violation_fraction == 0.1
    code, out, err = invoke_cli(["diff", "base", "leaf"], root)
    assert (code, err) == (0, "")
    assert out.splitlines()[2:] == [
        "~ datasets.movies.columns.runtime_minutes.range: [1, 600] -> [1, null]",
        "+ datasets.movies.columns.movie_id.unique: true",
        '+ datasets.movies.columns.genre.pattern: "^[a-z]+$"',
        "+ datasets.movies.columns.genre.monitor: false",
        "+ datasets.movies.columns.runtime_minutes.max_violation_fraction: 0.1",
    ]
    code, out, err = invoke_cli(["show", "leaf", "--explain"], root)
    assert code == 0, err
    assert "        unique: true  # environments/keys.yaml:6" in out
    assert "        pattern: ^[a-z]+$  # environments/keys.yaml:7" in out
    assert "        range: [1, null]  # environments/keys.yaml:8" in out
    assert "length" not in out


def test_digests_of_environments_without_the_new_keys_do_not_change(tmp_path):
    """The committed example locks record environment digests: adding keys must not stale
    them, and using a key must change the digest."""
    root = Path(__file__).resolve().parents[1]
    multiverse = Multiverse(Project(root))
    for name in multiverse.names():
        lock = json.loads((root / "environments" / f"{name}.lock.json").read_text())
        assert environment_digest(multiverse.resolve(name).env) == lock["environment_digest"], name
    repo = write_repo(tmp_path, envs=child(
        "datasets:\n  movies:\n    columns:\n      movie_id: {unique: false, monitor: true}\n"))
    multiverse = Multiverse(Project(repo))
    assert multiverse.resolve("child").env.datasets["movies"].uri == "data/movies.parquet"
    base, same = multiverse.resolve("base").env, multiverse.resolve("child").env
    assert environment_digest(base) == environment_digest(same)
    code, out, _ = invoke_cli(["show", "child"], repo)
    assert code == 0 and "unique:" not in out and "monitor:" not in out
    keyed = write_repo(tmp_path / "k", envs=child(
        "datasets:\n  movies:\n    columns:\n      movie_id: {unique: true}\n"))
    assert environment_digest(Multiverse(Project(keyed)).resolve("child").env) != \
        environment_digest(base)


def test_json_schema_documents_the_new_keys():
    from buildenv.env.spec import json_schema

    column = json_schema()["$defs"]["Column"]["properties"]
    for key in ("max_violation_fraction", "unique", "pattern", "length", "monitor"):
        assert column[key]["description"].strip(), key
    assert "RE2" in column["pattern"]["description"]
    assert {"type": "null"} in column["range"]["anyOf"][0]["prefixItems"][0]["anyOf"]


# --- validation ------------------------------------------------------------------------------------

FLIGHTS = """\
name: flights
datasets:
  flights:
    uri: data/flights.parquet
    columns:
      flight_id: {dtype: int64, unique: true}
      distance:  {dtype: float64, range: [0, null]}
      rating:    {dtype: float64, domain: [0.5, 1.0, 1.5, 2.0]}
      carrier:   {dtype: string, pattern: "^[A-Z0-9]{2}$", length: [2, 2]}
      comment:   {dtype: string, length: [null, 20], max_violation_fraction: 0.2}
      dest:      {dtype: string, domain: [JFK, LAX, SFO], max_violation_fraction: 0.05}
"""


def flights_table(n: int = 100, *, dup_ids: int = 0, negative: int = 0, bad_rating: int = 0,
                  bad_carrier: int = 0, long_comments: int = 0, bad_dest: int = 0,
                  sentinel: bool = False, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    ids[:dup_ids] = ids[n - 1]  # dup_ids rows repeat the last id
    distance = rng.uniform(100, 3000, n)
    distance[:negative] = -5.0
    rating = rng.choice([0.5, 1.0, 1.5, 2.0], n)
    rating[:bad_rating] = 1.25
    carrier = np.array(rng.choice(["AA", "BA", "LH", "9W"], n), dtype=object)
    carrier[:bad_carrier] = "xyz"
    comment = np.array(["ok"] * n, dtype=object)
    comment[:long_comments] = "a" * 30
    dest = np.array(rng.choice(["JFK", "LAX", "SFO"], n), dtype=object)
    dest[:bad_dest] = "ORD"
    if sentinel:
        ids[1] = ids[2] = SENTINEL_ID
        carrier[3] = SENTINEL
        comment[4] = SENTINEL * 3
        dest[5] = SENTINEL
    nulls = np.zeros(n, bool)
    nulls[-3:] = True  # nulls never count as violations
    return pa.table({
        "flight_id": pa.array(ids, pa.int64()),
        "distance": pa.array(distance, pa.float64(), mask=nulls),
        "rating": pa.array(rating, pa.float64(), mask=nulls),
        "carrier": pa.array(carrier.tolist(), pa.string(), mask=nulls),
        "comment": pa.array(comment.tolist(), pa.string(), mask=nulls),
        "dest": pa.array(dest.tolist(), pa.string(), mask=nulls),
    })


def flights_repo(root: Path, table: pa.Table, restricted: bool = False) -> Path:
    text = FLIGHTS + ("privacy: {restricted: [flights]}\n" if restricted else "")
    repo = write_repo(root, envs={"flights": text})
    write_parquet(repo / "data" / "flights.parquet", table)
    return repo


def test_clean_data_passes(tmp_path):
    repo = flights_repo(tmp_path, flights_table())
    assert invoke_cli(["validate", "flights"], repo) == (0, "flights: 1 dataset(s) valid\n", "")


def test_each_new_constraint_names_column_count_and_fraction(tmp_path):
    table = flights_table(dup_ids=2, negative=3, bad_rating=4, bad_carrier=5)
    repo = flights_repo(tmp_path, table)
    code, out, err = invoke_cli(["validate", "flights"], repo)
    assert code == 1, err
    assert err.splitlines() == [
        "environments/flights.yaml:6:33: error[BE209]: flights.flight_id: 3 of 100 non-null "
        "values (fraction 0.03) are duplicated (1 distinct values occur more than once); e.g. "
        "100 (3 rows)",
        "environments/flights.yaml:7:35: error[BE205]: flights.distance: 3 of 97 non-null "
        "values (fraction 0.03093) are outside range [0, null] (3 below, 0 above); e.g. -5.0, "
        "-5.0, -5.0",
        "environments/flights.yaml:8:35: error[BE204]: flights.rating: 4 of 97 non-null values "
        "(fraction 0.04124) are outside the domain (1.25: 4)",
        "  hint: add 1.25 to the domain if valid",
        "environments/flights.yaml:9:34: error[BE207]: flights.carrier: 5 of 97 non-null "
        "values (fraction 0.05155) do not match pattern '^[A-Z0-9]{2}$'; e.g. 'xyz'",
        "environments/flights.yaml:9:60: error[BE208]: flights.carrier: 5 of 97 non-null "
        "values (fraction 0.05155) have a length outside [2, 2] (0 shorter, 5 longer); e.g. "
        "'xyz'",
    ]


@pytest.mark.parametrize("bad, expect_code, severity", [(19, 0, "warning"), (20, 0, "warning"),
                                                       (21, 1, "error")])
def test_tolerance_warns_up_to_the_fraction_and_fails_beyond(tmp_path, bad, expect_code,
                                                            severity):
    # comment: length [null, 20], max_violation_fraction 0.2 of 100 non-null values
    table = flights_table(n=103, long_comments=bad)
    repo = flights_repo(tmp_path, table)
    code, out, err = invoke_cli(["validate", "flights"], repo)
    assert code == expect_code, err
    fraction = f"{bad / 100:.4g}"
    verdict = "within" if severity == "warning" else "exceeds"
    assert err.splitlines() == [
        f"environments/flights.yaml:10:34: {severity}[BE208]: flights.comment: {bad} of 100 "
        f"non-null values (fraction {fraction}) have a length outside [null, 20] (0 shorter, "
        f"{bad} longer); e.g. '{'a' * 30}'; {verdict} max_violation_fraction 0.2"]


def test_tolerance_applies_to_domains_too(tmp_path):
    repo = flights_repo(tmp_path, flights_table(bad_dest=4))  # 4 of 97 <= 0.05
    code, _, err = invoke_cli(["validate", "flights"], repo)
    assert code == 0 and "warning[BE204]: flights.dest: 4 of 97 non-null values (fraction " \
        "0.04124) are outside the domain ('ORD': 4); within max_violation_fraction 0.05" in err
    repo = flights_repo(tmp_path / "b", flights_table(bad_dest=5))  # 5 of 97 > 0.05
    code, _, err = invoke_cli(["validate", "flights"], repo)
    assert code == 1 and "error[BE204]: flights.dest: 5 of 97" in err and "exceeds" in err


def test_csv_datasets_get_the_same_checks(tmp_path):
    import pyarrow.csv as pacsv

    repo = flights_repo(tmp_path, flights_table())
    table = flights_table(dup_ids=2, bad_carrier=1)
    table = table.filter(pa.array([True] * 97 + [False] * 3))  # CSV has no string nulls
    pacsv.write_csv(table, repo / "data" / "flights.csv")
    (repo / "environments" / "flights.yaml").write_text(
        FLIGHTS.replace("uri: data/flights.parquet", "uri: data/flights.csv\n    format: csv"))
    code, _, err = invoke_cli(["validate", "flights"], repo)
    assert code == 1
    assert "error[BE209]: flights.flight_id: 2 of 97 non-null values" in err
    assert "error[BE207]: flights.carrier: 1 of 97 non-null values" in err


def test_pattern_is_searched_not_fully_matched_and_length_counts_characters(tmp_path):
    repo = write_repo(tmp_path, envs={"s": """\
name: s
datasets:
  t:
    uri: data/s.parquet
    columns:
      code: {dtype: string, pattern: "[0-9]"}
      word: {dtype: string, length: [2, 3]}
"""})
    write_parquet(repo / "data" / "s.parquet", pa.table({
        "code": ["ab1", "2", "x9y", "none"], "word": ["éé", "日本語", "ab", "abcd"]}))
    code, _, err = invoke_cli(["validate", "s"], repo)
    assert code == 1
    assert err.splitlines() == [
        "environments/s.yaml:6:29: error[BE207]: t.code: 1 of 4 non-null values (fraction "
        "0.25) do not match pattern '[0-9]'; e.g. 'none'",
        "environments/s.yaml:7:29: error[BE208]: t.word: 1 of 4 non-null values (fraction 0.25)"
        " have a length outside [2, 3] (0 shorter, 1 longer); e.g. 'abcd'"]


def test_float_domains_compare_in_the_stored_precision(tmp_path):
    repo = write_repo(tmp_path, envs={"f": """\
name: f
datasets:
  t:
    uri: data/f.parquet
    columns:
      r32: {dtype: float64, domain: [0.1, 0.5, 1]}
      r64: {dtype: float64, domain: [0.1, 0.5, 1]}
"""})
    write_parquet(repo / "data" / "f.parquet", pa.table({
        "r32": pa.array([0.1, 0.5, 1.0, None], pa.float32()),
        "r64": pa.array([0.1, 0.5, 1.0, 0.30000000000000004], pa.float64())}))
    code, _, err = invoke_cli(["validate", "f"], repo)
    assert code == 1
    assert err.splitlines() == [
        "environments/f.yaml:7:29: error[BE204]: t.r64: 1 of 4 non-null values (fraction 0.25) "
        "are outside the domain (0.30000000000000004: 1)",
        "  hint: add 0.30000000000000004 to the domain if valid"]


def test_open_temporal_ranges(tmp_path):
    import datetime as dt

    repo = write_repo(tmp_path, envs={"d": """\
name: d
datasets:
  t:
    uri: data/d.parquet
    columns:
      day: {dtype: date, range: ["2020-01-01", null]}
      at: {dtype: timestamp, range: [null, "2025-01-01T00:00:00Z"]}
"""})
    write_parquet(repo / "data" / "d.parquet", pa.table({
        "day": pa.array([dt.date(2019, 12, 31), dt.date(2030, 1, 1)]),
        "at": pa.array([dt.datetime(2024, 1, 1), dt.datetime(2025, 1, 1, 0, 0, 1)],
                       pa.timestamp("us", "UTC"))}))
    code, _, err = invoke_cli(["validate", "d"], repo)
    assert code == 1
    assert "t.day: 1 of 2 non-null values (fraction 0.5) are outside range [2020-01-01, null] " \
           "(1 below, 0 above); e.g. 2019-12-31" in err
    assert "t.at: 1 of 2 non-null values (fraction 0.5) are outside range [null, " \
           "2025-01-01T00:00:00Z] (0 below, 1 above)" in err


def test_restricted_dataset_shows_counts_and_fractions_never_values(tmp_path):
    table = flights_table(dup_ids=2, bad_carrier=5, long_comments=25, bad_dest=9, sentinel=True)
    repo = flights_repo(tmp_path, table, restricted=True)
    outputs = []
    for fmt in ("text", "json", "sarif"):
        code, out, err = invoke_cli(["validate", "flights", "--format", fmt], repo)
        assert code == 1
        outputs += [out, err]
    for _ in range(2):  # cached by the build path: the second run answers from the cache
        outputs += [p.to_text() for p in cached_validation(repo)]
    text = "\n".join(outputs)
    assert "error[BE209]: flights.flight_id: 4 of 100 non-null values (fraction 0.04) are " \
           "duplicated (2 distinct values occur more than once)\n  hint: values are never " \
           "printed; a person allowed by privacy.peek can look, audited: `buildenv peek ENV " \
           "--dataset flights --rows 10 --reason \"...\"`" in text
    assert "flights.carrier: 5 of 97 non-null values (fraction 0.05155) do not match pattern" \
           in text
    assert "flights.dest: 9 of 97 non-null values (fraction 0.09278) are outside the domain " \
           "(2 distinct values; restricted dataset: values not shown)" in text
    for secret in (SENTINEL, str(SENTINEL_ID), "xyz", "ORD", "aaaaa"):
        assert secret not in text, secret
    assert list((repo / ".buildenv" / "cache" / "validate").rglob("*.json"))
    for path in (repo / ".buildenv").rglob("*"):
        if path.is_file() and not kept_copy_of_data(repo, path):
            data = path.read_bytes()
            assert SENTINEL.encode() not in data and str(SENTINEL_ID).encode() not in data, path
    flights_repo(tmp_path / "open", table)
    code, _, err = invoke_cli(["validate", "flights"], tmp_path / "open")
    assert SENTINEL in err and str(SENTINEL_ID) in err  # the sentinels are really in the data


def cached_validation(repo: Path, env: str = "flights"):
    """validate_env as `buildenv build` runs it: with the lock's digests, so results are cached."""
    from buildenv.data.lock.lockfile import read_lock
    from buildenv.data.validate.validate import validate_env
    from buildenv.labels.locking import lock_environments

    project = Project(repo)
    multiverse = Multiverse(project)
    lock = read_lock(project, env)
    if lock is None or any(not (repo / d.uri).is_file() for d in lock.datasets.values()):
        lock_environments(multiverse, [env])
        lock = read_lock(project, env)
    assert lock is not None
    res = multiverse.resolve(env)
    return validate_env(res, project, {n: d.digest for n, d in lock.datasets.items()})


def test_cache_key_covers_the_new_keys_and_replays_severities(tmp_path):
    repo = flights_repo(tmp_path, flights_table(long_comments=10))
    first = cached_validation(repo)
    assert [(d.code, d.severity.value) for d in first] == [("BE208", "warning")]
    cache = repo / ".buildenv" / "cache" / "validate"
    entries = sorted(cache.rglob("*.json"))
    assert len(entries) == 1
    again = cached_validation(repo)  # from the cache: still a warning, at the same line
    assert again == first
    env = repo / "environments" / "flights.yaml"
    for old, new in (('pattern: "^[A-Z0-9]{2}$"', 'pattern: "^[A-Z]{2}$"'),
                     ("max_violation_fraction: 0.2", "max_violation_fraction: 0.05"),
                     ("{dtype: int64, unique: true}", "{dtype: int64}"),
                     ("length: [null, 20]", "length: [null, 25]"),
                     ("range: [0, null]", "range: [null, 0]")):
        env.write_text(env.read_text().replace(old, new))
        found = cached_validation(repo)
        entries_now = sorted(cache.rglob("*.json"))
        assert len(entries_now) == len(entries) + 1, old  # a new key: validated afresh
        entries = entries_now
    # '9W' fails ^[A-Z]{2}$, 10 long comments exceed 0.05, every distance is above 0
    assert {(d.code, d.severity.value) for d in found} == {
        ("BE205", "error"), ("BE207", "error"), ("BE208", "error")}
    env.write_text(env.read_text().replace("{dtype: int64}", "{dtype: int64, monitor: false}"))
    cached_validation(repo)
    assert len(sorted(cache.rglob("*.json"))) == len(entries)  # monitor is drift's business


# --- drift ---------------------------------------------------------------------------------------

DRIFT_ENV = """\
name: prod
datasets:
  events:
    uri: data/events.parquet
    columns:
      event_id: {dtype: int64, nullable: false, unique: true}
      session: {dtype: string, monitor: false}
      score: {dtype: float64, range: [0, 100], monitor: false}
      kind: {dtype: string, domain: [a, b, c]}
"""


def events(seed: int, offset: int, n: int = 3000) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "event_id": pa.array(np.arange(n) + offset, pa.int64()),
        "session": pa.array([f"s{offset + i // 3}" for i in range(n)]),
        "score": pa.array(rng.normal(20 + offset / 100, 5, n)),
        "kind": pa.array(rng.choice(["a", "b", "c"], n).tolist()),
    })


def test_unique_and_unmonitored_columns_are_validated_but_not_drift_compared(tmp_path):
    from buildenv.monitor.drift import run_drift

    repo = write_repo(tmp_path, envs={"prod": DRIFT_ENV})
    pq.write_table(events(1, 0), repo / "data" / "events.parquet")
    pq.write_table(events(2, 5000), repo / "data" / "events-next.parquet")
    _, problems = lock_environments(Multiverse(Project(repo)), ["prod"])
    assert not [p for p in problems if p.is_error]
    result = run_drift(Project(repo), "prod", "events", against="data/events-next.parquet")
    assert {a.column for a in result.alerts} == set()  # ids, sessions and scores all moved
    assert set(result.stats["columns"]) == {"kind"}
    assert result.stats["not_monitored"] == {"event_id": "unique (a key)",
                                             "session": "monitor: false",
                                             "score": "monitor: false"}
    everything = DRIFT_ENV.replace(", unique: true", "").replace(", monitor: false", "")
    (repo / "environments" / "prod.yaml").write_text(everything)
    result = run_drift(Project(repo), "prod", "events", against="data/events-next.parquet")
    assert {"event_id", "score"} <= {a.column for a in result.alerts}  # without the keys: noise
    pq.write_table(events(2, 5000).set_column(2, "score", pa.array([500.0] * 3000)),
                   repo / "data" / "events.parquet")
    (repo / "environments" / "prod.yaml").write_text(DRIFT_ENV)
    code, _, err = invoke_cli(["validate", "prod"], repo)
    assert code == 1 and "error[BE205]: events.score: 3,000 of 3,000 non-null values" in err


def test_drift_with_every_column_excluded_reports_nothing(tmp_path):
    from buildenv.monitor.drift import run_drift

    text = DRIFT_ENV.replace("kind: {dtype: string, domain: [a, b, c]}",
                             "kind: {dtype: string, domain: [a, b, c], monitor: false}")
    repo = write_repo(tmp_path, envs={"prod": text})
    pq.write_table(events(1, 0), repo / "data" / "events.parquet")
    pq.write_table(events(2, 5000), repo / "data" / "events-next.parquet")
    lock_environments(Multiverse(Project(repo)), ["prod"])
    result = run_drift(Project(repo), "prod", "events", against="data/events-next.parquet")
    assert result.alerts == [] and result.stats["columns"] == {} and result.exit_code == 0


def test_validating_every_new_constraint_never_imports_pandas(tmp_path):
    """pyarrow imports pandas on `Array.to_numpy`, `pa.array(ndarray)` and `pa.scalar(int)`:
    about 0.5 s of CPU per validation that the kernels avoid (the bench measured it)."""
    import os
    import subprocess
    import sys

    repo = flights_repo(tmp_path, flights_table(dup_ids=2, negative=1, bad_rating=1,
                                                bad_carrier=1, long_comments=1, bad_dest=1))
    script = ("import sys\n"
              "from buildenv.core.project import Project\n"
              "from buildenv.env.resolve import Multiverse\n"
              "from buildenv.data.validate import uniqueness\n"
              "from buildenv.data.validate.validate import validate_env\n"
              "uniqueness.BUDGET = 64  # spill too\n"
              "project = Project.discover(sys.argv[1])\n"
              "found = validate_env(Multiverse(project).resolve('flights'), project)\n"
              "print(sorted({d.code for d in found}), 'pandas' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script, str(repo)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("['BE204', 'BE205', 'BE207', 'BE208', 'BE209'] False")
