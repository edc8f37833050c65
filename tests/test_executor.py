"""Executors: the same lock manifest, validation diagnostics and drift statistics whether the
per-file tasks run in this process or as Ray tasks; and a Ray that is missing or does not
answer is a diagnostic naming it, quickly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, drop_store, recorded_cancels
from partitioned_repo import (
    DAYS,
    FILES_PER_DAY,
    day,
    events_table,
    file_path,
    make_partitioned_repo,
)

from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.data.executor import LocalExecutor, RayExecutor, make_executor
from buildenv.data.lock.lockfile import read_lock
from buildenv.data.validate.validate import validate_env
from buildenv.env.resolve import Multiverse
from buildenv.labels.locking import lock_environments
from buildenv.monitor.drift import run_drift, write_stats


def planted_repo(root: Path) -> Path:
    """Problems in several files, so that merging partial results has something to merge."""
    make_partitioned_repo(root, days=DAYS)
    t = events_table(5)
    t = t.set_column(1, "x", pa.array([99.0, -50.0] + t.column("x").to_pylist()[2:]))
    pq.write_table(t, file_path(root, 1, 0))
    t = events_table(6)
    t = t.set_column(2, "kind", pa.array(["z", "q", "z"] + t.column("kind").to_pylist()[3:]))
    pq.write_table(t, file_path(root, 2, 1))
    bad = root / "data" / "events" / "date=2027-03-01" / "part-0.parquet"
    bad.parent.mkdir()
    pq.write_table(events_table(7), bad)
    # a shifted candidate for drift
    cand = root / "cand" / "events"
    for i in range(DAYS):
        for part in range(FILES_PER_DAY):
            t = events_table(1000 + 10 * i + part)
            t = t.set_column(1, "x", pa.array([v + 0.8 for v in t.column("x").to_pylist()]))
            target = cand / f"date={day(i)}" / f"part-{part}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, target)
    return root


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray")
    executor = RayExecutor(address="", num_cpus=2, object_store_mb=100, timeout=120)
    yield executor
    executor.close()


def run_all(root: Path, executor) -> tuple[dict, list[dict], str]:
    project = Project.discover(root)
    (root / ".buildenv" / "statcache.json").unlink(missing_ok=True)
    shutil.rmtree(root / ".buildenv" / "cache", ignore_errors=True)
    multiverse = Multiverse(project)
    results, problems = lock_environments(multiverse, ["ev"], executor=executor)
    assert problems == []
    lock = results[0][1]
    res = multiverse.resolve("ev")
    found = validate_env(res, project, lock.pins(), manifests=lock.manifests(),
                         executor=executor)
    result = run_drift(project, "ev", "events", against="cand/events/", use_cache=False,
                       executor=executor, batch_rows=256)
    stats = root / "stats.json"
    write_stats(result, project, stats)
    return (lock.datasets["events"].to_json(), [d.to_json() for d in found],
            stats.read_text())


def test_ray_results_are_identical_to_local(tmp_path, ray_executor):
    root = planted_repo(tmp_path)
    started = time.monotonic()
    local = run_all(root, LocalExecutor(2))
    ray = run_all(root, ray_executor)
    assert ray[0] == local[0]  # the manifest
    assert ray[1] == local[1]  # every diagnostic, in order
    assert ray[2] == local[2]  # the statistics JSON, byte for byte
    codes = sorted({d["code"] for d in local[1]})
    assert codes == ["BE063", "BE204", "BE205"], local[1]
    stats = json.loads(local[2])
    assert stats["columns"]["x"]["baseline"]["count"] > 0 and stats["alerts"]
    assert time.monotonic() - started < 60


def test_ray_refuses_a_changed_file_like_local(tmp_path, ray_executor):
    root = planted_repo(tmp_path)
    project = Project.discover(root)
    multiverse = Multiverse(project)
    results, _ = lock_environments(multiverse, ["ev"])
    lock = results[0][1]
    drop_store(root)  # else the gate reads the pinned bytes from the store
    pq.write_table(events_table(4242), file_path(root, 3, 0))
    res = multiverse.resolve("ev")
    out = {}
    for name, executor in (("local", LocalExecutor(2)), ("ray", ray_executor)):
        shutil.rmtree(root / ".buildenv" / "cache", ignore_errors=True)
        out[name] = [d.to_json() for d in validate_env(res, project, lock.pins(),
                                                       manifests=lock.manifests(),
                                                       executor=executor)]
    assert out["ray"] == out["local"]
    assert [d["code"] for d in out["local"]] == ["BE055"]
    assert f"date={day(3)}/part-0.parquet" in out["local"][0]["message"]


def test_the_local_executor_keeps_the_order_of_the_items():
    def slow_first(i: int) -> int:
        time.sleep(0.05 if i == 0 else 0)
        return i * i

    assert LocalExecutor(4).map(slow_first, list(range(8))) == [i * i for i in range(8)]
    assert make_executor(None).name == "local"
    with pytest.raises(DiagnosticError) as info:
        make_executor("spark")
    assert info.value.diagnostics[0].code == "BE004"
    with pytest.raises(DiagnosticError) as info:
        make_executor("rey")
    assert info.value.diagnostics[0].hints == ("did you mean 'ray'?",)


@pytest.mark.parametrize("name, value, words", [
    ("BUILDENV_RAY_TIMEOUT", "30s", "a positive number (seconds), not '30s'"),
    ("BUILDENV_RAY_TIMEOUT", "-1", "a positive number (seconds), not '-1'"),
    ("BUILDENV_RAY_NUM_CPUS", "two", "a positive whole number (CPUs), not 'two'"),
    ("BUILDENV_RAY_NUM_CPUS", "0", "a positive whole number (CPUs), not '0'"),
    ("BUILDENV_RAY_OBJECT_STORE_MB", "1.5", "a positive whole number (MiB), not '1.5'"),
])
def test_a_ray_setting_that_is_not_a_number_is_named(monkeypatch, name, value, words):
    """A typo in a Ray variable is BE004 naming it (exit 2), before anything connects: not an
    internal error (float('30s')), nor silently the default."""
    monkeypatch.setenv(name, value)
    with pytest.raises(DiagnosticError) as info:
        RayExecutor()
    (d,) = info.value.diagnostics
    assert (d.code, info.value.exit_code) == ("BE004", 2)
    assert d.message == f"{name} must be {words}"
    monkeypatch.setenv(name, " ")  # empty: the default
    assert RayExecutor().timeout > 0


def cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120,
        prelude: str = "") -> tuple[int, str, str, float]:
    full = {k: v for k, v in os.environ.items() if k not in ("BUILDENV_ROOT", "RAY_ADDRESS")}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    full.update(env or {})
    code = (prelude + "import sys; sys.argv = ['buildenv'] + sys.argv[1:]\n"
            "from buildenv.cli import main\nmain()\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, env=full, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def test_an_address_nobody_listens_on_is_named_quickly(tmp_path):
    root = make_partitioned_repo(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once closed
    code, out, err, took = cli(["validate", "ev", "--executor", "ray"], root,
                               {"BUILDENV_RAY_ADDRESS": f"ray://127.0.0.1:{port}"})
    assert code == 2, err
    assert f"error[BE881]: Ray cluster at 'ray://127.0.0.1:{port}' does not answer: " in err
    assert "Traceback" not in err and took < 60


def test_a_ray_client_address_without_ray_client_says_what_to_install(tmp_path):
    """`ray://` needs Ray's client extra; without it the cluster is not "not answering"."""
    ray = pytest.importorskip("ray")
    try:
        import grpc  # noqa: F401
        pytest.skip("Ray Client is installed here")
    except ImportError:
        pass
    root = make_partitioned_repo(tmp_path)
    with socket.socket() as server:  # something answers at the address
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code, _, err, _ = cli(["validate", "ev", "--executor", "ray"], root,
                              {"BUILDENV_RAY_ADDRESS": f"ray://127.0.0.1:{port}"})
    assert code == 2, err
    assert f"error[BE880]: a ray:// address ('ray://127.0.0.1:{port}') needs Ray Client" in err
    assert f"pip install 'ray[client]=={ray.__version__}'" in err and "BE881" not in err


def test_a_cluster_that_refuses_the_token_is_not_called_silent(monkeypatch):
    """A cluster with token authentication answers a driver lacking its token by refusing
    each call, which `ray.init` retries until the timeout: BE887 says so at once, whether
    the GCS call refuses it or `ray.init` raises Ray's authentication error itself."""
    ray = pytest.importorskip("ray")
    raylet = pytest.importorskip("ray._raylet")
    refused = ray.exceptions.AuthenticationError("RPC error: InvalidAuthToken")

    def refuse(*args, **kwargs):
        raise refused

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    monkeypatch.setattr(raylet, "GcsClient", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with socket.socket() as server:  # something answers at the address
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DiagnosticError) as info:
            RayExecutor(address=f"127.0.0.1:{port}", timeout=20).prepare()
        assert time.monotonic() - started < 10  # not the whole timeout
        first = info.value.diagnostics[0]
        assert first.code == "BE887" and info.value.exit_code == 2
        assert (f"Ray cluster at '127.0.0.1:{port}' answered but refused this machine's "
                "authentication token") in first.message and "RAY_AUTH_MODE is not set" \
            in first.message
        assert "RAY_AUTH_MODE=token" in first.hints[0]
        monkeypatch.setattr(raylet, "GcsClient", lambda *a, **k: None)  # the GCS lets it by
        monkeypatch.setattr(ray, "init", refuse)  # RAY_AUTH_MODE=token and no token found
        with pytest.raises(DiagnosticError) as info:
            RayExecutor(address=f"127.0.0.1:{port}", timeout=20).prepare()
        assert info.value.diagnostics[0].code == "BE887"


def test_an_address_that_accepts_but_never_answers_times_out(tmp_path):
    pytest.importorskip("ray")
    root = make_partitioned_repo(tmp_path)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list = []
    stop = threading.Event()

    def swallow() -> None:  # accepts connections and says nothing
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    try:
        code, out, err, took = cli(["lock", "--executor", "ray"], root,
                                   {"BUILDENV_RAY_ADDRESS": f"127.0.0.1:{port}",
                                    "BUILDENV_RAY_TIMEOUT": "4"})
    finally:
        stop.set()
        thread.join()
        server.close()
    assert code == 2, err
    assert f"error[BE881]: Ray cluster at '127.0.0.1:{port}' does not answer" in err
    assert took < 45
    assert not (root / "environments" / "ev.lock.json").exists()


def test_without_the_extra_the_diagnostic_says_what_to_install(tmp_path):
    root = make_partitioned_repo(tmp_path)
    no_ray = "import sys; sys.modules['ray'] = None\n"
    code, _, err, _ = cli(["lock", "--executor", "local"], root, prelude=no_ray)
    assert code == 0, err
    assert read_lock(Project.discover(root), "ev") is not None
    code, out, err, _ = cli(["drift", "ev", "--dataset", "events", "--against", "data/events/",
                             "--executor", "ray"], root, prelude=no_ray)
    assert code == 2
    assert "error[BE880]: the Ray executor needs Ray, which is not installed" in err
    assert "hint: pip install 'buildenv[ray]'" in err
    # and [tool.buildenv] executor selects it the same way
    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text().replace(
        "[tool.buildenv]\n", '[tool.buildenv]\nexecutor = "ray"\n'))
    for path in (root / "data").rglob("*.parquet"):
        os.utime(path)  # new stats: the check must hash them, on the executor configured
    code, _, err, _ = cli(["lock", "--check"], root, prelude=no_ray)
    assert code == 2 and "error[BE880]" in err


def test_the_per_file_sampling_threshold_changes_no_statistic(tmp_path, monkeypatch):
    """Each file keeps only sample keys below a threshold derived from the row count; the
    statistics are the ones of no threshold, and a threshold that turns out too low is
    detected and the pass rerun."""
    from buildenv.data.gate.partitioned_read import PartitionedRead
    from buildenv.monitor import statistics

    root = planted_repo(tmp_path)
    project = Project.discover(root)
    lock_environments(Multiverse(project), ["ev"])
    monkeypatch.setattr(statistics, "SAMPLE_SIZE", 700)  # fewer than the rows: a real sample

    def stats(name: str) -> str:
        result = run_drift(project, "ev", "events", against="cand/events/", use_cache=False,
                           sample_size=700, executor=LocalExecutor(2))
        write_stats(result, project, root / "s.json")
        return (root / "s.json").read_text()

    with_threshold = stats("threshold")
    passes = []
    real = statistics._merge_files
    monkeypatch.setattr(statistics, "_merge_files",
                        lambda *a: passes.append(a[6]) or real(*a))
    monkeypatch.setattr(PartitionedRead, "total_rows", lambda self: None)
    assert stats("none") == with_threshold
    assert passes and all(t == float("inf") for t in passes)
    passes.clear()
    monkeypatch.setattr(PartitionedRead, "total_rows", lambda self: 10**9)  # far too low
    assert stats("low") == with_threshold
    assert passes[:2] == [pytest.approx(2 * 700 / 10**9 + 1e-4), float("inf")]


@pytest.mark.slow
def test_a_local_ray_prints_nothing_of_its_own(tmp_path):
    """Ray's start-up warnings (its token-authentication banner) stay out of the command's
    output: what a command prints is buildenv's."""
    pytest.importorskip("ray")
    root = make_partitioned_repo(tmp_path)
    code, _, err, _ = cli(["lock", "ev"], root)
    assert code == 0, err
    code, out, err, _ = cli(["validate", "ev", "--executor", "ray", "--no-progress"], root,
                            {"BUILDENV_RAY_NUM_CPUS": "1", "BUILDENV_RAY_OBJECT_STORE_MB": "80"},
                            timeout=300)
    assert code == 0, err
    assert out == "ev: 1 dataset(s) valid\n"
    assert err == ""


@pytest.mark.slow
def test_a_ray_already_running_on_the_machine_is_not_joined(tmp_path):
    """Without an address the command starts a Ray of its own, as documented, even where
    `ray start` left a cluster on this machine (Ray finds one through the address file in its
    temporary directory): joining it would pass it a CPU count, which Ray refuses."""
    pytest.importorskip("ray")
    root = make_partitioned_repo(tmp_path)
    code, _, err, _ = cli(["lock", "ev"], root)
    assert code == 0, err
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
        code, out, err, _ = cli(["validate", "ev", "--executor", "ray", "--no-progress"], root,
                                {"BUILDENV_RAY_NUM_CPUS": "1", "RAY_TMPDIR": str(ray_tmp),
                                 "BUILDENV_RAY_OBJECT_STORE_MB": "80"}, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (code, out) == (0, "ev: 1 dataset(s) valid\n"), err


def test_a_delta_table_runs_one_task_per_data_file_on_ray_like_local(tmp_path, ray_executor):
    pytest.importorskip("deltalake")
    from tables_repo import make_delta_repo

    root = make_delta_repo(tmp_path)
    project = Project.discover(root)
    multiverse = Multiverse(project)
    out = {}
    for name, executor in (("local", LocalExecutor(2)), ("ray", ray_executor)):
        (root / ".buildenv" / "statcache.json").unlink(missing_ok=True)
        shutil.rmtree(root / ".buildenv" / "cache", ignore_errors=True)
        results, problems = lock_environments(multiverse, ["tab"], executor=executor)
        assert problems == []
        lock = results[0][1]
        assert len(lock.datasets["events"].manifest.files) == 6  # tasks: one per data file
        found = validate_env(multiverse.resolve("tab"), project, lock.pins(),
                             manifests=lock.manifests(), executor=executor)
        out[name] = (lock.render(), [d.to_json() for d in found])
    assert out["ray"] == out["local"]


def _failing_map_task():
    """A data task of the tests below, made here so that Ray ships it by value (workers cannot
    import the tests): 'fail' once the other task runs; 'watch' runs until interrupted (and
    says so); 'stuck' ignores the interrupt."""
    def task(item: tuple[str, str]) -> str:
        from pathlib import Path

        kind, marker = item
        other = Path(marker)
        if kind == "fail":
            deadline = time.monotonic() + 60
            while not other.is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise OSError("disk gone")
        other.write_text("running")
        try:
            for _ in range(2400):  # work in steps, as hashing and decoding do
                time.sleep(0.05)
        except KeyboardInterrupt:
            if kind == "stuck":  # as if in native code for minutes
                for _ in range(2400):
                    try:
                        time.sleep(0.05)
                    except KeyboardInterrupt:
                        pass
            other.write_text("stopped")
            raise
        return "finished"

    return task


def test_a_failed_map_stops_its_other_tasks_by_their_flag_not_ray_cancel(
        ray_executor, tmp_path, monkeypatch):
    """One task of a data map fails: the map's other tasks are stopped by its stop flag (a
    Ctrl-C in their thread) and the map waits for them: no `ray.cancel`, whose crossing with
    a reply can abort Ray's driver, and nothing of the map still runs once BE882 is out."""
    forces = recorded_cancels(monkeypatch)
    marker = tmp_path / "watch"
    start = time.monotonic()
    with pytest.raises(DiagnosticError) as err:
        ray_executor.map(_failing_map_task(), [("fail", str(marker)), ("watch", str(marker))])
    assert err.value.diagnostics[0].code == "BE882" and "disk gone" in str(err.value)
    assert marker.read_text() == "stopped"  # stopped, and its clean-up ran, before BE882
    assert forces == []
    assert time.monotonic() - start < 60


def test_a_map_task_that_does_not_stop_is_killed_after_the_grace(ray_executor, tmp_path,
                                                                 monkeypatch):
    """A data task that ignores the interrupt (stuck in native code) has its worker killed
    once the grace is over, and only it: `ray.cancel(force=True)`."""
    from buildenv.data import executor as executor_module

    forces = recorded_cancels(monkeypatch)
    monkeypatch.setattr(executor_module, "CANCEL_GRACE", 1.0)
    marker = tmp_path / "stuck"
    start = time.monotonic()
    with pytest.raises(DiagnosticError):
        ray_executor.map(_failing_map_task(), [("fail", str(marker)), ("stuck", str(marker))])
    took = time.monotonic() - start
    assert forces == [True] and marker.read_text() == "running"
    assert took < 60
    assert ray_executor.map(len, ["ab", "c"]) == [2, 1]  # the executor still works
