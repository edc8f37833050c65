"""Datasets pinned by `.dvc` files: bytes from DVC's cache and remote, through dvc-data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import invoke_cli, write_env, write_repo

pytest.importorskip("dvc_data")

V1 = "id,spend\n1,2.5\n2,3.5\n3,4.0\n"
V2 = "id,spend\n1,2.5\n2,3.5\n3,4.0\n4,9.0\n"
ENV = """\
name: dvc
datasets:
  customers:
    uri: data/customers.csv
    format: csv
    dvc: data/customers.csv.dvc
    columns:
      id: {dtype: int64, nullable: false}
      spend: {dtype: float64, range: [0, 100]}
"""


def dvc_add(root: Path, text: str, remote: Path) -> str:
    """What `dvc add` + `dvc push` leave behind, written with dvc-data's own API: the object
    in the remote (DVC 3 layout) and the `.dvc` file; the workspace file is not kept."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import get_odb
    from dvc_data.hashfile.transfer import transfer
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    work = root / "producer"
    work.mkdir(exist_ok=True)
    (work / "customers.csv").write_text(text)
    cache = get_odb(fs, str(work / "cache" / "files" / "md5"), hash_name="md5")
    store = get_odb(fs, str(remote / "files" / "md5"), hash_name="md5")
    staging, meta, obj = build(cache, str(work / "customers.csv"), fs, "md5")
    transfer(staging, cache, {obj.hash_info}, shallow=False)
    transfer(cache, store, {obj.hash_info}, shallow=False)
    out = {"md5": obj.hash_info.value, "size": meta.size, "hash": "md5",
           "path": "customers.csv"}
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "customers.csv.dvc").write_text(yaml.safe_dump({"outs": [out]},
                                                                    sort_keys=False))
    return obj.hash_info.value


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = write_repo(tmp_path / "repo", envs={"dvc": ENV})
    remote = tmp_path / "dvc-remote"
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {remote}\n")
    dvc_add(root, V1, remote)
    return root


def test_the_lock_pins_the_bytes_the_dvc_file_names(repo):
    assert not (repo / "data" / "customers.csv").exists()  # never `dvc pull`ed here
    code, out, err = invoke_cli(["lock", "dvc"], repo)
    assert (code, err) == (0, ""), err
    entry = json.loads((repo / "environments" / "dvc.lock.json").read_text())["datasets"][
        "customers"]
    import hashlib

    assert entry["digest"] == "sha256:" + hashlib.sha256(V1.encode()).hexdigest()
    assert entry["dvc"] == {"file": "data/customers.csv.dvc", "hash": "md5",
                            "md5": hashlib.md5(V1.encode()).hexdigest(), "path": "customers.csv"}
    assert entry["rows"] == 3
    code, out, err = invoke_cli(["validate", "dvc"], repo)
    assert (code, err) == (0, ""), err
    code, out, err = invoke_cli(["lock", "dvc", "--check"], repo)
    assert code == 0, err


def test_a_new_dvc_version_makes_the_lock_stale(repo, tmp_path):
    assert invoke_cli(["lock", "dvc"], repo)[0] == 0
    new = dvc_add(repo, V2, tmp_path / "dvc-remote")
    code, out, err = invoke_cli(["lock", "dvc", "--check"], repo)
    assert code == 1
    assert f"error[BE051]: dataset 'customers' changed since it was locked: " \
           f"'data/customers.csv.dvc' now pins md5 {new}" in err
    assert invoke_cli(["lock", "dvc"], repo)[0] == 0
    entry = json.loads((repo / "environments" / "dvc.lock.json").read_text())["datasets"][
        "customers"]
    assert entry["rows"] == 4 and entry["dvc"]["md5"] == new


def test_an_object_missing_from_the_remote_is_be086(repo, tmp_path):
    for path in (tmp_path / "dvc-remote").rglob("*"):
        if path.is_file():
            os.chmod(path, 0o644)
            path.unlink()
    code, out, err = invoke_cli(["lock", "dvc"], repo)
    assert code != 0
    assert "error[BE086]: dataset 'customers': 'data/customers.csv.dvc': DVC remote" in err
    assert "has no object" in err


def test_a_damaged_remote_object_is_never_used(repo, tmp_path):
    [path] = [p for p in (tmp_path / "dvc-remote").rglob("*") if p.is_file()]
    os.chmod(path, 0o644)
    path.write_text("id,spend\n1,666\n")
    code, out, err = invoke_cli(["lock", "dvc"], repo)
    assert code != 0 and "error[BE086]" in err
    assert not (repo / "environments" / "dvc.lock.json").exists()


def test_a_directory_pin_is_refused(repo):
    (repo / "data" / "customers.csv.dvc").write_text(yaml.safe_dump(
        {"outs": [{"md5": "f076c73811d14495dff55b56229c9699.dir", "path": "customers.csv",
                   "hash": "md5", "nfiles": 2}]}))
    code, out, err = invoke_cli(["lock", "dvc"], repo)
    assert code != 0 and "error[BE085]" in err and "pins a directory" in err


def test_a_dvc_remote_on_s3(tmp_path, s3):
    client, bucket = s3
    root = write_repo(tmp_path / "repo", envs={"dvc": ENV})
    local_remote = tmp_path / "staging"
    dvc_add(root, V1, local_remote)
    for path in local_remote.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket,
                               "dvc/" + path.relative_to(local_remote).as_posix())
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text(
        f"[core]\n    remote = s3\n['remote \"s3\"']\n    url = s3://{bucket}/dvc\n")
    code, out, err = invoke_cli(["lock", "dvc"], root)
    assert (code, err) == (0, ""), err
    assert invoke_cli(["validate", "dvc"], root)[0] == 0


def test_dvc_is_refused_with_a_table_format(tmp_path):
    root = write_repo(tmp_path)
    write_env(root, "bad", ENV.replace("name: dvc", "name: bad").replace(
        "format: csv", "format: delta"))
    code, out, err = invoke_cli(["lock", "bad"], root)
    assert code == 2 and "error[BE070]" in err and "`dvc` pins files" in err
