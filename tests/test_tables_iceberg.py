"""Iceberg datasets: a snapshot (of a ref) pinned as its files, written by PyIceberg."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import drop_store, invoke_cli, write_env
from tables_repo import batch, iceberg_catalog, make_iceberg_repo, write_iceberg_env

from buildenv.core.project import Project
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import read_lock
from buildenv.env.resolve import Multiverse

pytest.importorskip("pyiceberg")

EXPERIMENT = """\
name: ice-exp
extends: ice
description: the relabeled rows, as a data branch of production
datasets:
  events:
    ref: exp-relabel
"""


def lock_json(root: Path, env: str = "ice") -> dict:
    return json.loads((root / "environments" / f"{env}.lock.json").read_text())


def gate_rows(root: Path, env: str = "ice") -> pa.Table:
    project = Project.discover(root)
    res = Multiverse(project).resolve(env)
    lock = read_lock(project, env)
    gate = Gate(project, res.env, "build", pins=lock.pins(), manifests=lock.manifests(),
                where=res)
    with gate.open("events") as read:
        return read.table(["id", "plan", "x", "y"]).sort_by("id")


def iceberg_rows(root: Path, ref: str | None = None) -> pa.Table:
    table = iceberg_catalog(root).load_table("ml.events")
    scan = table.scan().use_ref(ref) if ref else table.scan()
    return scan.to_arrow().select(["id", "plan", "x", "y"]).sort_by("id")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_iceberg_repo(tmp_path)
    write_env(root, "ice-exp", EXPERIMENT)
    return root


def test_main_and_a_branch_are_pinned_as_their_snapshots_files(repo):
    code, out, err = invoke_cli(["lock", "ice", "ice-exp"], repo)
    assert (code, err) == (0, ""), err
    main, branch = lock_json(repo)["datasets"]["events"], \
        lock_json(repo, "ice-exp")["datasets"]["events"]
    table = iceberg_catalog(repo).load_table("ml.events")
    assert main["table"]["snapshot"] == table.current_snapshot().snapshot_id
    assert branch["table"]["snapshot"] == table.metadata.refs["exp-relabel"].snapshot_id
    assert (main["table"]["ref"], branch["table"]["ref"]) == ("main", "exp-relabel")
    assert (main["rows"], branch["rows"]) == (90, 80)
    assert main["table"]["base"] == "data/iceberg/warehouse/ml/events"  # repository-relative
    for env, ref in (("ice", None), ("ice-exp", "exp-relabel")):
        rows = gate_rows(repo, env)
        assert rows.equals(iceberg_rows(repo, ref).cast(rows.schema))


def test_a_data_branch_shows_its_ref_and_snapshot_and_diffs_row_free(repo):
    assert invoke_cli(["lock", "ice", "ice-exp"], repo)[0] == 0
    code, out, err = invoke_cli(["show", "ice-exp", "--explain"], repo)
    assert code == 0, err
    assert "    ref: exp-relabel  # environments/ice-exp.yaml:6" in out
    snapshot = lock_json(repo, "ice-exp")["datasets"]["events"]["table"]["snapshot"]
    assert (f"# locked in environments/ice-exp.lock.json: datasets.events = snapshot {snapshot} "
            "(ref exp-relabel), 80 rows in 6 files") in out
    code, out, err = invoke_cli(["diff", "ice", "ice-exp"], repo)
    assert code == 0, err
    lines = out.splitlines()
    assert '+ datasets.events.ref: "exp-relabel"' in lines
    data = next(line for line in lines if line.startswith("~ data events: "))
    assert data.endswith("90 rows in 6 files -> snapshot "
                         f"{snapshot} (ref exp-relabel), 80 rows in 6 files; files: 3 shared, "
                         "3 only in ice, 3 only in ice-exp")


def test_both_branches_build(repo):
    assert invoke_cli(["lock", "ice", "ice-exp"], repo)[0] == 0
    for env, rows in (("ice", 90), ("ice-exp", 80)):
        code, out, err = invoke_cli(["build", "events", "--env", env, "--no-register"], repo)
        assert code == 0, err
        lineage = json.loads((repo / "dist" / "events" / env / "buildenv.json").read_text())
        assert lineage["datasets"]["events"]["digest"] == \
            lock_json(repo, env)["datasets"]["events"]["digest"]
        assert lineage["datasets"]["events"]["rows"] == rows


def test_a_moved_branch_makes_the_lock_stale_saying_what_happened(repo):
    assert invoke_cli(["lock", "ice-exp"], repo)[0] == 0
    table = iceberg_catalog(repo).load_table("ml.events")
    table.append(batch(2000, 2010), branch="exp-relabel")
    code, out, err = invoke_cli(["lock", "ice-exp", "--check"], repo)
    assert code == 1
    new = iceberg_catalog(repo).load_table("ml.events").metadata.refs["exp-relabel"].snapshot_id
    assert (f"error[BE051]: dataset 'events' moved since it was locked: ref 'exp-relabel' is "
            f"at snapshot {new}, the lock pins") in err
    assert "1 snapshot — append 3 files" in err
    assert invoke_cli(["lock", "ice", "--check"], repo)[0] in (0, 1)  # main did not move


def test_a_pinned_snapshot_that_was_expired_is_be072_and_a_tag_keeps_it(repo):
    table = iceberg_catalog(repo).load_table("ml.events")
    first = table.metadata.refs["v1"].snapshot_id
    second = table.current_snapshot().snapshot_id
    # a third snapshot on main, so that the second can be expired
    table.append(batch(3000, 3003))
    write_iceberg_env(repo, f"    snapshot: {second}\n")
    assert invoke_cli(["lock", "ice"], repo)[0] == 0
    iceberg_catalog(repo).load_table("ml.events").maintenance.expire_snapshots() \
        .by_id(second).commit()
    code, out, err = invoke_cli(["lock", "ice"], repo)
    assert code != 0
    assert f"error[BE072]: dataset 'events': Iceberg table 'ml.events' has no snapshot {second} " \
           "(it was expired, or never existed)" in err
    assert "tag a snapshot you pin" in err
    with pytest.raises(ValueError, match="protected"):  # a tagged snapshot cannot expire
        iceberg_catalog(repo).load_table("ml.events").maintenance.expire_snapshots() \
            .by_id(first).commit()
    # the lock still pins the expired snapshot's files, which Iceberg does not delete
    assert invoke_cli(["lock", "ice", "--check"], repo)[0] == 0
    assert gate_rows(repo).num_rows == 90


def test_an_unknown_ref_lists_the_refs(repo):
    write_iceberg_env(repo, "    ref: exp-relable\n")
    code, out, err = invoke_cli(["lock", "ice"], repo)
    assert code != 0
    assert err.splitlines()[:2] == [
        "environments/ice.yaml:4:5: error[BE074]: dataset 'events': Iceberg table 'ml.events' "
        "has no branch or tag 'exp-relable' (refs: exp-relabel, main, v1)",
        "  hint: did you mean 'exp-relabel'?"]


def test_a_catalog_that_never_answers_is_be073_within_its_timeout(repo):
    with socket.socket() as hole:  # accepts connections, never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        port = hole.getsockname()[1]
        write_env(repo, "rest", f"""\
            name: rest
            datasets:
              events:
                uri: ml.events
                format: iceberg
                catalog: {{type: rest, uri: "http://127.0.0.1:{port}", timeout: 2}}
                columns:
                  id: {{dtype: int64}}
            """)
        started = time.monotonic()
        code, out, err = invoke_cli(["lock", "rest"], repo)
        took = time.monotonic() - started
    assert code != 0 and took < 15
    assert (f"error[BE073]: dataset 'events': catalog 'default' (rest, http://127.0.0.1:{port})"
            " did not answer within 2 s") in err


def test_a_missing_catalog_database_is_named(repo):
    write_env(repo, "gone", """\
        name: gone
        datasets:
          events:
            uri: ml.events
            format: iceberg
            catalog: {type: sql, uri: "sqlite:///data/nowhere/catalog.db"}
            columns:
              id: {dtype: int64}
        """)
    code, out, err = invoke_cli(["lock", "gone"], repo)
    assert code != 0 and "error[BE053]" in err and "data/nowhere/catalog.db' does not exist" in err
    assert not (repo / "data" / "nowhere").exists()  # nothing was created


def test_a_renamed_column_is_refused_naming_the_file(repo):
    table = iceberg_catalog(repo).load_table("ml.events")
    with table.update_schema() as update:
        update.rename_column("x", "feature")
    table.append(batch(4000, 4003).rename_columns(["id", "plan", "feature", "y"]))
    write_iceberg_env(repo)
    (repo / "environments" / "ice.yaml").write_text(
        (repo / "environments" / "ice.yaml").read_text().replace("      x: ", "      feature: "))
    code, out, err = invoke_cli(["lock", "ice"], repo)
    assert code != 0
    assert "error[BE075]" in err and "stores column 'feature' as 'x' (renamed since the file " \
        "was written)" in err


def test_a_tampered_file_of_the_pinned_snapshot_is_caught(repo):
    assert invoke_cli(["lock", "ice"], repo)[0] == 0
    drop_store(repo)
    victim = sorted((repo / "data" / "iceberg" / "warehouse").rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    code, out, err = invoke_cli(["lock", "ice", "--check"], repo)
    assert code == 1 and "error[BE051]" in err


def test_invalid_iceberg_declarations_are_be070(repo):
    write_env(repo, "bad", """\
        name: bad
        datasets:
          events:
            uri: data/not/an/identifier
            format: iceberg
            version: 3
            ref: main
            snapshot: 1
            columns:
              id: {dtype: int64}
        """)
    code, out, err = invoke_cli(["lock", "bad"], repo)
    assert code == 2
    lines = [line for line in err.splitlines() if "error[" in line]
    assert all("BE070" in line for line in lines) and len(lines) == 4, err


def test_a_warehouse_on_s3(tmp_path, s3):
    client, bucket = s3
    root = make_iceberg_repo(tmp_path)
    import os

    from pyiceberg.catalog.sql import SqlCatalog
    props = {"uri": f"sqlite:///{root / 'data' / 'iceberg' / 's3.db'}",
             "warehouse": f"s3://{bucket}/wh", "s3.endpoint": os.environ["AWS_ENDPOINT_URL"],
             "s3.region": "us-east-1"}
    catalog = SqlCatalog("default", **props)
    catalog.create_namespace("ml")
    table = catalog.create_table("ml.events", schema=batch(0, 1).schema)
    table.append(batch(0, 25))
    write_env(root, "ice", (root / "environments" / "ice.yaml").read_text().replace(
        "sqlite:///data/iceberg/catalog.db", "sqlite:///data/iceberg/s3.db"))
    code, out, err = invoke_cli(["lock", "ice"], root)
    assert (code, err) == (0, ""), err
    entry = lock_json(root)["datasets"]["events"]
    assert entry["table"]["base"].startswith(f"s3://{bucket}/wh/") and entry["rows"] == 25
    assert gate_rows(root).num_rows == 25
