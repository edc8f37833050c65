"""The object store: every pinned version stays retrievable (lock keeps, push/pull share,
checkout restores, the gate reads old versions from it)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli, write_env, write_repo

from buildenv.core.project import Project
from buildenv.data.lock.objects import LocalObjects, clone_file

CUSTOMERS = "id,spend\n1,2.5\n2,3.5\n3,4.0\n"
CUSTOMERS_ENV = """\
name: cust
datasets:
  customers:
    uri: data/customers.csv
    format: csv
    columns:
      id: {dtype: int64, nullable: false}
      spend: {dtype: float64, range: [0, 100]}
"""


def objects(root: Path) -> LocalObjects:
    return LocalObjects(Project.discover(root).data_state_dir / "objects")


def every_object_is_whole(root: Path, temporaries: bool = False) -> int:
    """Every object hashes to its name, and (unless `temporaries`: a killed copy's are
    allowed, they are never objects) no temporary file is left; returns the count."""
    store = objects(root)
    count = 0
    for digest in store.digests():
        algorithm, hexdigest = digest.split(":")
        assert hashlib.new(algorithm, store.path(digest).read_bytes()).hexdigest() == hexdigest
        count += 1
    leftovers = list(store.root.rglob(".*.tmp")) if store.root.exists() else []
    assert temporaries or not leftovers, leftovers
    return count


@pytest.fixture
def cust(tmp_path: Path) -> Path:
    root = write_repo(tmp_path, envs={"cust": CUSTOMERS_ENV},
                      files={"data/customers.csv": CUSTOMERS})
    code, out, err = invoke_cli(["lock"], root)
    assert code == 0, err
    return root


def test_an_edited_file_stays_retrievable(cust):
    """The new user's path: edit a locked CSV, then follow the hints."""
    (cust / "data" / "customers.csv").write_text("id,spend\n1,2.5\n2,93.5\n")
    code, out, err = invoke_cli(["lock", "cust", "--check"], cust)
    assert code == 1 and "error[BE051]" in err
    assert "hint: if not, `buildenv checkout cust` restores the locked bytes" in err
    code, out, err = invoke_cli(["drift", "cust", "--dataset", "customers", "--against",
                                 "data/customers.csv"], cust)
    assert "BE055" not in err and "locked     data/customers.csv" in out, (out, err)
    assert "3 rows" in out and "2 rows" in out
    code, out, err = invoke_cli(["validate", "cust"], cust)
    assert code == 1
    assert "error[BE051]: dataset 'customers' no longer matches its lock" in err
    code, out, err = invoke_cli(["checkout", "cust"], cust)
    assert (code, out) == (0, "cust: restored 1 file(s) (27 B); 0 already as locked\n"), err
    assert (cust / "data" / "customers.csv").read_text() == CUSTOMERS
    assert invoke_cli(["lock", "cust", "--check"], cust)[0] == 0
    assert invoke_cli(["checkout", "cust"], cust)[1] == \
        "cust: restored 0 file(s) (0 B); 1 already as locked\n"


def test_objects_are_read_only_and_restricted_ones_private(cust):
    store = objects(cust)
    lock = json.loads((cust / "environments" / "base.lock.json").read_text())
    movies = store.path(lock["datasets"]["movies"]["digest"])
    ratings = store.path(lock["datasets"]["ratings"]["digest"])  # restricted in `base`
    assert stat.S_IMODE(movies.stat().st_mode) == 0o444
    assert stat.S_IMODE(ratings.stat().st_mode) == 0o400
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert every_object_is_whole(cust) == 4  # movies, movies-v2, ratings, customers


def test_an_in_place_edit_leaves_the_kept_bytes_alone(cust):
    """Not a hard link: writing the dataset's file does not write the object."""
    path = cust / "data" / "customers.csv"
    digest = json.loads((cust / "environments" / "cust.lock.json").read_text())[
        "datasets"]["customers"]["digest"]
    kept = objects(cust).path(digest)
    assert kept.stat().st_ino != path.stat().st_ino
    with open(path, "r+b") as handle:
        handle.write(b"ID")
    assert kept.read_bytes() == CUSTOMERS.encode()


def test_clone_falls_back_to_a_copy_where_the_filesystem_cannot_reflink(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(3 << 20))
    how = clone_file(source, tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == source.read_bytes()
    assert how in ("reflink", "copy_file_range", "copy")
    with pytest.raises(FileExistsError):
        clone_file(source, tmp_path / "b.bin")  # never over an existing file


def _xfs_mount(tmp_path: Path) -> Path | None:
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        return None
    image, mount = tmp_path / "xfs.img", tmp_path / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(320 << 20)
    steps = [["mkfs.xfs", "-q", "-m", "reflink=1", str(image)],
             ["mount", "-o", "loop", str(image), str(mount)]]
    for step in steps:
        if subprocess.run(step, capture_output=True).returncode != 0:
            return None
    return mount


def test_clone_reflinks_where_the_filesystem_can(tmp_path):
    mount = _xfs_mount(tmp_path)
    if mount is None:
        pytest.skip("no reflink filesystem: needs root, mkfs.xfs and loop devices")
    try:
        source = mount / "a.bin"
        source.write_bytes(os.urandom(8 << 20))
        assert clone_file(source, mount / "b.bin") == "reflink"
        with open(source, "r+b") as handle:  # the clone shares blocks until either is written
            handle.write(b"changed")
        assert (mount / "b.bin").read_bytes()[:7] != b"changed"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_damaged_local_object_is_refused_and_removed(cust):
    from buildenv.data.gate.errors import GateError
    from buildenv.data.gate.gate import Gate
    from buildenv.data.lock.lockfile import read_lock
    from buildenv.env.resolve import Multiverse

    lock = read_lock(Project.discover(cust), "cust")
    kept = objects(cust).path(lock.datasets["customers"].digest)
    os.chmod(kept, 0o644)
    kept.write_text("id,spend\n1,0\n2,0\n3,0\n")
    (cust / "data" / "customers.csv").unlink()
    project = Project.discover(cust)
    res = Multiverse(project).resolve("cust")
    gate = Gate(project, res.env, "build", pins=lock.pins(), where=res)
    with pytest.raises(GateError) as caught, gate.open("customers") as read:
        read.table(["id"])
    assert caught.value.diagnostic.code == "BE082"
    assert not kept.exists()


def _shared(root: Path, bucket: str) -> None:
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text.replace(
        "[tool.buildenv]\n", f'[tool.buildenv]\nstore = "s3://{bucket}/store"\n', 1))


def _clone_without_data(root: Path, target: Path) -> Path:
    """What CI checks out: the repository without its data or .buildenv/."""
    shutil.copytree(root, target, ignore=shutil.ignore_patterns(".buildenv", "*.csv",
                                                                "*.parquet"))
    return target


def test_push_and_pull_share_the_pinned_bytes_through_s3(cust, tmp_path, s3):
    client, bucket = s3
    _shared(cust, bucket)
    code, out, err = invoke_cli(["push"], cust)
    assert (code, err) == (0, ""), err
    assert out.startswith("pushed 4 object(s)") and out.endswith("0 already in the store\n")
    assert invoke_cli(["push"], cust)[1].startswith("pushed 0 object(s)")
    ci = _clone_without_data(cust, tmp_path / "ci")
    assert invoke_cli(["lock", "--check", "cust"], ci)[0] == 1  # no data here
    code, out, err = invoke_cli(["pull", "cust"], ci)
    assert (code, err) == (0, ""), err
    assert out.startswith("pulled 1 object(s)")
    code, out, err = invoke_cli(["checkout", "cust"], ci)
    assert code == 0, err
    assert (ci / "data" / "customers.csv").read_text() == CUSTOMERS
    assert invoke_cli(["lock", "--check", "cust"], ci)[0] == 0
    assert every_object_is_whole(ci) == 1


def test_the_gate_fetches_an_old_version_from_the_shared_store(cust, tmp_path, s3):
    client, bucket = s3
    _shared(cust, bucket)
    assert invoke_cli(["push"], cust)[0] == 0
    ci = _clone_without_data(cust, tmp_path / "ci")
    (ci / "data").mkdir(exist_ok=True)
    (ci / "data" / "customers.csv").write_text("id,spend\n7,1.0\n")  # today's data
    code, out, err = invoke_cli(["drift", "cust", "--dataset", "customers", "--against",
                                 "data/customers.csv"], ci)
    assert "locked     data/customers.csv" in out and "3 rows" in out, (out, err)
    assert every_object_is_whole(ci) == 1  # fetched and verified on the way


def test_a_damaged_shared_object_is_never_used(cust, tmp_path, s3):
    client, bucket = s3
    _shared(cust, bucket)
    assert invoke_cli(["push"], cust)[0] == 0
    digest = json.loads((cust / "environments" / "cust.lock.json").read_text())[
        "datasets"]["customers"]["digest"].split(":")[1]
    client.put_object(Bucket=bucket, Key=f"store/sha256/{digest[:2]}/{digest[2:]}",
                      Body=b"id,spend\n1,666\n")
    ci = _clone_without_data(cust, tmp_path / "ci")
    code, out, err = invoke_cli(["pull", "cust"], ci)
    assert code == 1 and "error[BE082]" in err and "does not hash to its name" in err
    assert every_object_is_whole(ci) == 0
    client.delete_object(Bucket=bucket, Key=f"store/sha256/{digest[:2]}/{digest[2:]}")
    code, out, err = invoke_cli(["pull", "cust"], ci)
    assert code == 1 and "error[BE080]" in err


def test_transfers_of_restricted_bytes_are_audited(cust, tmp_path, s3):
    client, bucket = s3
    _shared(cust, bucket)
    assert invoke_cli(["push", "base"], cust)[0] == 0
    ci = _clone_without_data(cust, tmp_path / "ci")
    assert invoke_cli(["pull", "base"], ci)[0] == 0
    assert invoke_cli(["checkout", "base"], ci)[0] == 0
    for root, purposes in ((cust, ["push"]), (ci, ["pull", "checkout"])):
        records = [json.loads(line) for line in
                   (root / ".buildenv" / "audit" / "log.jsonl").read_text().splitlines()]
        assert [r["purpose"] for r in records] == purposes
        assert all(r["dataset"] == "ratings" for r in records)  # the restricted one only
    ratings = ci / "data" / "ratings.parquet"
    assert stat.S_IMODE(ratings.stat().st_mode) == 0o600


def test_without_a_shared_store_push_is_a_configuration_error(cust):
    code, out, err = invoke_cli(["push"], cust)
    assert code == 2 and "error[BE081]: no shared store is configured" in err


def test_concurrent_locks_keep_whole_objects(tmp_path):
    root = write_repo(tmp_path)
    for i in range(4):
        (root / "data" / f"blob{i}.csv").write_bytes(b"id,spend\n" + b"1,2.0\n" * 100_000
                                                     + str(i).encode() + b",1.0\n")
        write_env(root, f"e{i}", CUSTOMERS_ENV.replace("name: cust", f"name: e{i}")
                  .replace("customers.csv", f"blob{i % 2}.csv"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BUILDENV_ROOT", None)
    procs = [subprocess.Popen([sys.executable, "-m", "buildenv", "lock", f"e{i}"], cwd=root,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert every_object_is_whole(root) == 2


def test_a_killed_lock_leaves_no_partial_object(tmp_path):
    root = write_repo(tmp_path)
    (root / "data" / "big.csv").write_bytes(b"id,spend\n" + b"1,2.0\n" * 4_000_000)
    write_env(root, "big", CUSTOMERS_ENV.replace("name: cust", "name: big")
              .replace("customers.csv", "big.csv"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BUILDENV_ROOT", None)
    rng = random.Random(23)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "buildenv", "lock", "big"], cwd=root,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(0.3, 2.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        (root / ".buildenv" / "statcache.json").unlink(missing_ok=True)
        every_object_is_whole(root, temporaries=True)
    assert invoke_cli(["lock", "big"], root)[0] == 0
    assert every_object_is_whole(root, temporaries=True) >= 1


@pytest.mark.parametrize("declared, kept", [
    ({"uri": "data/x.csv", "format": "csv"}, True),
    ({"uri": "data/events/"}, True),
    ({"uri": "s3://bucket/x.parquet"}, False),  # it would be copied to this machine
    ({"uri": "s3://bucket/x.parquet", "keep": True}, True),
    ({"uri": "data/events", "format": "delta"}, False),  # a table keeps its history
    ({"uri": "data/events", "format": "delta", "keep": True}, True),
    ({"uri": "data/x.csv", "format": "csv", "keep": False}, False),
])
def test_what_a_lock_keeps_by_default(declared, kept):
    from buildenv.env.spec import Dataset

    assert Dataset(**declared, columns={"id": {"dtype": "int64"}}).keeps is kept


def test_label_exports_and_mappings_are_kept_read_back_and_restored(tmp_path):
    from labelrepo import make_label_repo

    from buildenv.data.gate.gate import Gate
    from buildenv.data.lock.lockfile import read_lock
    from buildenv.env.resolve import Multiverse

    root = make_label_repo(tmp_path / "repo")
    assert invoke_cli(["lock"], root)[0] == 0
    before = invoke_cli(["labels", "v2", "--format", "json"], root)
    assert before[0] == 0, before[2]
    export = (root / "data" / "kind-v1.json").read_bytes()
    mapping = (root / "data" / "v1-to-v2.sssom.tsv").read_bytes()
    (root / "data" / "kind-v1.json").unlink()
    (root / "data" / "v1-to-v2.sssom.tsv").unlink()
    code, out, err = invoke_cli(["lock", "--check", "v2"], root)
    assert code == 1 and "BE853" in err  # builds refuse: the files are not where declared
    project = Project.discover(root)
    pin = read_lock(project, "base").labels["kind-v1"].digest
    with Gate(project, Multiverse(project).resolve("base").env, "labels").open_file(
            "data/kind-v1.json", what="label set 'kind-v1'", expect=pin) as read:
        assert b"".join(read.chunks()) == export  # the pinned bytes, from the store
        assert read.verify() == pin and read.from_store
    code, out, err = invoke_cli(["checkout", "v2"], root)
    assert code == 0, err
    assert (root / "data" / "kind-v1.json").read_bytes() == export
    assert (root / "data" / "v1-to-v2.sssom.tsv").read_bytes() == mapping
    assert invoke_cli(["lock", "--check"], root)[0] == 0
    assert invoke_cli(["labels", "v2", "--format", "json"], root) == before


def test_a_damaged_copy_of_a_label_file_is_refused_and_removed(tmp_path):
    from labelrepo import make_label_repo

    from buildenv.data.gate.errors import GateError
    from buildenv.data.gate.gate import Gate
    from buildenv.data.lock.lockfile import read_lock
    from buildenv.env.resolve import Multiverse

    root = make_label_repo(tmp_path / "repo")
    assert invoke_cli(["lock"], root)[0] == 0
    project = Project.discover(root)
    pin = read_lock(project, "base").labels["kind-v1"].digest
    kept = objects(root).path(pin)
    os.chmod(kept, 0o644)
    kept.write_bytes(b"[]")
    (root / "data" / "kind-v1.json").unlink()
    gate = Gate(project, Multiverse(project).resolve("base").env, "labels")
    with gate.open_file("data/kind-v1.json", what="label set 'kind-v1'", expect=pin) as read:
        assert read.from_store and b"".join(read.chunks()) == b"[]"
        with pytest.raises(GateError) as caught:
            read.verify()
    assert caught.value.diagnostic.code == "BE082"  # one store lookup, one refusal, any reader
    assert not kept.exists()
