"""`buildenv image`: build context, daemonless reproducible OCI archive, and a Docker daemon
integration test that runs the image and sends it predictions.

CI has no container engine running: the `docker` fixture starts Debian's dockerd itself
(tests/services.py), and the base image is built once per machine with debootstrap and cached
in ~/.cache/buildenv. Nothing here skips.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import invoke_cli
from services import (
    VALID,
    base_image,
    base_rootfs,
    docker_daemon,
    free_port,
    make_churn_repo,
    post,
    stop,
    tool,
)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_churn_repo(tmp_path_factory.mktemp("image") / "repo")
    for args in (["lock", "prod"], ["build", "churn", "--env", "prod", "--no-register"]):
        code, out, err = invoke_cli(args, root)
        assert code == 0, out + err
    return root


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in base rootfs: enough for the archive (it holds python3.11), not to run."""
    path = tmp_path_factory.mktemp("base") / "tiny-rootfs.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("./etc/os-release", b"ID=tiny\n"),
                           (f"./usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
                            b"#!/bin/false\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def image(repo: Path, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    return invoke_cli(["image", "churn", "--env", "prod", *args], repo, env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_oci_archive_is_reproducible_and_skopeo_reads_it(repo: Path, tiny_base: Path) -> None:
    first, second = repo / "first.oci.tar", repo / "second.oci.tar"
    code, out, err = image(repo, "--oci", str(first), "--base-rootfs", str(tiny_base))
    assert code == 0, out + err
    manifest = out.split("manifest ")[1].split()[0]
    # from scratch again: no context, no cached base layer
    shutil.rmtree(repo / ".buildenv/image")
    shutil.rmtree(repo / ".buildenv/cache/oci-base")
    code, out, err = image(repo, "--oci", str(second), "--base-rootfs", str(tiny_base))
    assert code == 0, out + err
    assert sha256(first) == sha256(second)
    assert out.split("manifest ")[1].split()[0] == manifest

    with tarfile.open(first) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]
    assert names[2:-2] == sorted(names[2:-2])
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}

    inspect = json.loads(subprocess.run([tool("skopeo"), "inspect", f"oci-archive:{first}"],
                                        check=True, capture_output=True, text=True).stdout)
    assert inspect["Digest"] == manifest
    assert len(inspect["Layers"]) == 2
    assert inspect["Labels"]["dev.buildenv.environment"] == "prod"
    lineage = json.loads((repo / "dist/churn/prod/buildenv.json").read_text())
    assert inspect["Labels"]["dev.buildenv.model_digest"] == lineage["model_digest"]
    config = json.loads(subprocess.run([tool("skopeo"), "inspect", "--config",
                                        f"oci-archive:{first}"], check=True,
                                       capture_output=True, text=True).stdout)
    assert config["config"]["Cmd"] == ["python3", "/opt/buildenv/app/serve.py"]
    assert config["config"]["User"] == "65534:65534"
    assert "PYTHONPATH=/opt/buildenv/site-packages" in config["config"]["Env"]


def test_context_vendors_the_serving_runtime(repo: Path) -> None:
    """Exactly the locked serving environment: serving.requirements and the app's runtime at
    the versions the model was trained with, nothing of the training's toolchain."""
    from buildenv.toolchain.lockfile import parse_lock

    ctx = repo / ".buildenv/image/churn/prod"
    info = json.loads((ctx / "image.json").read_text())
    lineage = json.loads((repo / "dist/churn/prod/buildenv.json").read_text())
    lock = parse_lock((ctx / "requirements.txt").read_text())
    assert lock.hashed and info["serving_lock"] == lock.digest
    vendored = {k.lower().replace("_", "-"): v for k, v in info["packages"].items()}
    assert vendored == lock.packages
    assert {"scikit-learn", "pandas", "numpy", "scipy", "skops", "joblib"} <= set(vendored)
    for name, version in lock.packages.items():
        assert lineage["toolchain"]["packages"].get(name, version) == version
    assert not {"mlflow-skinny", "pyarrow", "pydantic"} & set(vendored)
    assert 0 < info["layer_bytes"] == sum(f.stat().st_size for d in ("app", "model",
                                                                     "site-packages")
                                          for f in (ctx / d).rglob("*") if f.is_file())
    assert not list((ctx / "site-packages").rglob("__pycache__"))
    serving = json.loads((ctx / "app/serving.json").read_text())
    # the served columns' declarations the app checks requests against (issue 19)
    assert serving["inputs"] == {
        "plan": {"dtype": "string", "nullable": False, "domain": ["basic", "pro", "team"]},
        "spend": {"dtype": "float64", "nullable": False, "range": [0, 1000]},
        "tenure": {"dtype": "float64", "nullable": False, "range": [0, 100]}}
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "RUN" not in dockerfile and "FROM ${BASE}" in dockerfile


def test_the_size_is_reported_and_checked_against_the_limit(repo: Path, tiny_base: Path,
                                                          tmp_path: Path) -> None:
    code, out, err = image(repo, "--oci", str(tmp_path / "a.tar"), "--base-rootfs",
                           str(tiny_base))
    assert code == 0, out + err
    layer = json.loads((repo / ".buildenv/image/churn/prod/image.json").read_text())["layer_bytes"]
    total = layer + tiny_base.stat().st_size
    assert f"size: {total / 1e6:.1f} MB (base rootfs " in out
    (repo / "environments/prod-small.yaml").write_text(
        "name: prod-small\nextends: prod\nserving:\n  limits:\n    max_image_mb: 5\n")
    try:
        for args in (["lock", "prod-small"], ["build", "churn", "--env", "prod-small",
                                              "--no-register"]):
            code, out, err = invoke_cli(args, repo)
            assert code == 0, out + err
        code, out, err = invoke_cli(["image", "churn", "--env", "prod-small", "--oci",
                                     str(tmp_path / "b.tar"), "--base-rootfs", str(tiny_base)],
                                    repo)
    finally:
        (repo / "environments/prod-small.yaml").unlink()
        (repo / "environments/prod-small.lock.json").unlink(missing_ok=True)
    assert code == 1, out + err
    line = next(x for x in err.splitlines() if "BE757" in x)
    assert line.startswith("environments/prod-small.yaml:5:5: error[BE757]: the image's own "
                           "layer is ") and line.endswith(
        " MB, over serving.limits.max_image_mb (5 MB) of environment prod-small"), line
    assert float(line.split("layer is ")[1].split()[0]) > 5
    assert not (tmp_path / "b.tar").exists()


def test_gpu_libraries_in_the_serving_lock_are_refused(repo: Path, tmp_path: Path) -> None:
    """PyPI's `xgboost` brings NVIDIA's NCCL: not in a CPU image (`xgboost-cpu` is the CPU
    build). Refused from the lock, before anything is downloaded or installed."""
    from buildenv.core.diagnostics import DiagnosticError
    from buildenv.core.project import Project
    from buildenv.env.resolve import Multiverse
    from buildenv.toolchain.serving import serving_toolchain

    (repo / "environments/prod-gpu.yaml").write_text(
        "name: prod-gpu\nextends: prod\nserving:\n  requirements: [xgboost==3.2.0]\n")
    try:
        project = Project.discover(repo)
        res = Multiverse(project).resolve("prod-gpu")
        with pytest.raises(DiagnosticError) as caught:
            serving_toolchain(project, res, {}, ("numpy",))
    finally:
        (repo / "environments/prod-gpu.yaml").unlink()
    (d,) = caught.value.diagnostics
    assert d.code == "BE756" and "nvidia-nccl-cu12" in d.message
    assert (d.path, d.line) == ("environments/prod-gpu.yaml", 4) and "xgboost-cpu" in d.hints[0]


def test_base_rootfs_without_the_python_is_refused(repo: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    code, out, err = image(repo, "--oci", str(tmp_path / "x.tar"), "--base-rootfs", str(empty))
    assert code == 2
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert (f"error[BE755]: base rootfs '{empty}' has no /usr/bin/python{python} or "
            f"/usr/local/bin/python{python}: the vendored packages need Python {python}") in err
    code, out, err = image(repo, "--oci", str(tmp_path / "x.tar"))
    assert code == 2 and "--oci needs --base-rootfs TAR" in err


def test_serving_app_enforces_the_served_columns(repo: Path) -> None:
    """The app on the host's Python, from the context, as the image runs it."""
    ctx = repo / ".buildenv/image/churn/prod"
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": str(ctx / "site-packages"), "BUILDENV_MODEL": str(ctx / "model"), "PORT": str(port), "HOST": "127.0.0.1"}
    # -S: no site-packages of our own, only the vendored ones (PYTHONPATH)
    proc = subprocess.Popen([sys.executable, "-S", str(ctx / "app/serve.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_ping(port, proc)
        check_contract(port)
        status, body = post(port, {"dataframe_records": [{**VALID, "tenure": None}]})
        assert (status, body["column"]) == (400, "tenure")
        assert body["error"] == ("row 0: served column 'tenure' is null, but environment prod "
                                 "declares it non-nullable")
        status, body = post(port, {"dataframe_records": [{**VALID, "spend": "a lot"}]})
        assert (status, body["error"]) == (400, "row 0: served column 'spend' must be float64, "
                                                "got str \"a lot\"")
        status, body = post(port, {"rows": []})
        assert status == 400 and "expected one of dataframe_records" in body["error"]
        status, body = post(port, {"dataframe_split": {"columns": ["tenure", "spend", "plan"],
                                                       "data": [[90.0, 10.0, "team"]]}})
        assert status == 200 and body["predictions"] == [False]
    finally:
        stop(proc)


def check_contract(port: int) -> None:
    """A valid request gets predictions; one missing a served column gets a 400 naming it."""
    status, body = post(port, {"dataframe_records": [VALID, {**VALID, "tenure": 95.0,
                                                             "plan": "team", "extra": 1}]})
    assert status == 200, body
    assert len(body["predictions"]) == 2 and body["classes"] == [False, True]
    assert all(abs(sum(p) - 1) < 1e-9 for p in body["probabilities"])
    assert body["probabilities"][0][1] > body["probabilities"][1][1]  # short tenure churns more
    missing = {k: v for k, v in VALID.items() if k != "plan"}
    status, body = post(port, {"dataframe_records": [VALID, missing]})
    assert status == 400
    assert body == {"error": "row 1 is missing served column 'plan' (environment prod serves "
                             "this model: plan, spend, tenure)", "column": "plan"}


def _wait_ping(port: int, proc: subprocess.Popen | None = None, container=None,
               timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "app exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    logs = container.logs().decode() if container is not None else ""
    raise AssertionError(f"serving app did not answer on port {port}\n{logs}")


# --- with a Docker daemon ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def docker_host(tmp_path_factory: pytest.TempPathFactory):
    with docker_daemon(tmp_path_factory.mktemp("docker")) as host:
        yield host


def run_and_check(host: str, tag: str) -> None:
    import docker

    client = docker.DockerClient(base_url=host, version="auto", timeout=120)
    port = free_port()
    container = client.containers.run(tag, detach=True, network_mode="host",
                                      environment={"PORT": str(port)})
    try:
        _wait_ping(port, container=container)
        check_contract(port)
    finally:
        container.remove(force=True)
        client.close()


def test_docker_build_runs_and_serves(repo: Path, docker_host: str) -> None:
    base = base_image(docker_host)
    code, out, err = image(repo, "--docker", "--base-image", base, "--tag",
                           "buildenv/churn:test", env={"DOCKER_HOST": docker_host})
    assert code == 0, out + err
    assert "docker: buildenv/churn:test sha256:" in out
    run_and_check(docker_host, "buildenv/churn:test")


def test_oci_archive_on_the_debian_base_runs(repo: Path, docker_host: str) -> None:
    archive = repo / "debian.oci.tar"
    code, out, err = image(repo, "--oci", str(archive), "--base-rootfs", str(base_rootfs()))
    assert code == 0, out + err
    subprocess.run([tool("skopeo"), "copy", "--dest-daemon-host", docker_host,
                    f"oci-archive:{archive}", "docker-daemon:buildenv/churn:oci"],
                   check=True, capture_output=True)
    run_and_check(docker_host, "buildenv/churn:oci")


def test_docker_unreachable_is_BE753_only_when_asked(repo: Path, tmp_path: Path) -> None:
    nowhere = {"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    code, out, err = image(repo, env=nowhere)
    assert code == 0 and "docker: no daemon reachable; wrote the context only" in err
    code, out, err = image(repo, "--docker", env=nowhere)
    assert code == 1 and f"error[BE753]: no Docker daemon reachable at unix://{tmp_path}" in err
