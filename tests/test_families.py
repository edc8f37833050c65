"""Every model family compiled against the serving stack: scikit-learn (skops, pickle opt-in),
XGBoost and LightGBM (wrappers), PyTorch (`buildenv.TorchModel`) and ready ONNX graphs;
operators checked for the onnx stack, parity and budgets, the pre-check, determinism, the
bad-input list, and loading, serving and promoting with the environment's trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from familyrepo import make_family_repo
from sandbox_repo import sandbox_usable
from services import free_port, stop

from buildenv.compile.artifact import read_lineage
from buildenv.compile.integrity import load_verified_model
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse

pytestmark = pytest.mark.slow


def run(repo: Path, *args: str, env: dict | None = None, timeout: float = 600
        ) -> tuple[int, str, str]:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=repo,
                          capture_output=True, text=True, timeout=timeout,
                          env={**full, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    old = os.environ.get("BUILDENV_TRACKING_URI")
    os.environ["BUILDENV_TRACKING_URI"] = uri
    yield uri
    if old is None:
        os.environ.pop("BUILDENV_TRACKING_URI", None)
    else:
        os.environ["BUILDENV_TRACKING_URI"] = old


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tracking) -> Path:
    root = make_family_repo(tmp_path_factory.mktemp("families") / "repo")
    code, out, err = run(root, "lock")
    assert code == 0, err
    return root


def build(repo: Path, training: str, env: str, *extra: str) -> tuple[int, str, str]:
    return run(repo, "build", training, "--env", env, "--no-register", "--no-cache", *extra)


def files(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def resolved(repo: Path, env: str):
    return Multiverse(Project.discover(repo)).resolve(env)


# --- every family builds, byte for byte the same twice -----------------------------------------

FAMILIES = [  # training, environment, family, format, model file
    ("sk-lr", "sk", "sklearn", "skops", "model.skops"),
    ("xgb", "sk", "sklearn", "skops", "model.skops"),  # a booster's bytes inside skops
    ("lgbm", "ox", "sklearn", "onnx", "model.onnx"),
    ("mlp", "ox", "torch", "onnx", "model.onnx"),
    ("mlp-seq", "ox", "torch", "onnx", "model.onnx"),  # exported by the export worker
    ("onnx-ready", "ox", "onnx", "onnx", "model.onnx"),
]


@pytest.mark.parametrize("training,env,family,fmt,model_file", FAMILIES,
                         ids=[f"{t}@{e}" for t, e, *_ in FAMILIES])
def test_family_builds_and_rebuilds_byte_identical(repo, tmp_path, training, env, family, fmt,
                                                   model_file):
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        code, _, err = build(repo, training, env, "--out", str(out))
        assert code == 0, err
    assert files(outs[0]) == files(outs[1])
    assert "model.pkl" not in files(outs[0]) and model_file in files(outs[0])
    lineage = read_lineage(outs[0])
    assert (lineage["family"], lineage["format"]) == (family, fmt)
    assert lineage["classes"] == [False, True] and lineage["task"] == "classification"
    parity = lineage["parity"]
    assert parity["rows"] == lineage["evaluation"]["rows"] and parity["label_flips"] == 0
    assert parity["outside_tolerance"] == 0 and sum(parity["histogram"].values()) > 0
    assert lineage["importance"]["method"] == "permutation"
    assert set(lineage["importance"]["features"]) == set(lineage["inputs"])
    assert lineage["precheck"]["status"] == "passed"
    if sandbox_usable("any"):  # every family's libraries load in the sandbox (read-only venv)
        assert lineage["isolation"]["mechanism"] != "none", lineage["isolation"]
    if fmt == "onnx":
        inventory = lineage["onnx"]["inventory"]
        assert inventory["opset_import"]["ai.onnx"] <= 18
        assert all(":" in op["operator"] for op in inventory["operators"])
    if family == "torch":
        assert lineage["libraries"]["torch"].startswith("2.13.0")
        assert lineage["code_modules"] == (["train.mlp"] if training == "mlp" else [])
    served = load_verified_model(Project.discover(repo), outs[0], lineage["model_digest"],
                                 "the artifact", resolved(repo, env).env)
    assert served.classes == [False, True]


# --- the bad-input list: a diagnostic with its code and location, no artifact ------------------

REFUSED = [  # training, environment, code, what the message says
    ("bare-module", "ox", "BE304", "returned a bare PyTorch module (Linear)"),
    ("bad-forward", "ox", "BE415", "the module's forward fails on the declared inputs"),
    ("bad-output", "ox", "BE415", "TorchModel output must be one of logits, probabilities, "
                                  "value, not 'scores'"),
    ("onnx-bad-names", "ox", "BE402", "model input 'feature_a' is not declared"),
    ("onnx-invalid", "ox", "BE415", "the returned ONNX model is not valid: No Op registered "
                                    "for NoSuchOperator"),
    ("xgb", "ox-linear", "BE406", "ONNX operator ai.onnx.ml:TreeEnsembleClassifier (opset 3, "
                                  "1 node(s), first: TreeEnsembleClassifier) is not in "
                                  "serving.ops of environment ox-linear"),
    ("onnx-ready", "ox-old", "BE406", "the ONNX graph needs opset 18 (serving.opset is 15)"),
    ("mlp", "ox-old", "BE412", "the ONNX graph needs IR version 10 (serving.max_ir_version "
                               "is 7)"),
    ("mlp-seq", "ox-old", "BE412", "the ONNX graph needs IR version 10 "
                                   "(serving.max_ir_version is 7)"),
    ("custom-convert", "ox", "BE405", "cannot convert sklearn.pipeline.Pipeline to ONNX "
                                      "opset 18"),
    ("mlp", "sk", "BE413", "the model is a PyTorch module, which serving stack 'sklearn'"),
    ("sk-lr", "ox-tight", "BE407", "onnxruntime differs from the trained model by more than "
                                   "serving.parity"),
    ("wrapped-module", "sk", "BE418", "a PyTorch module sits inside the model at "
                                      "TorchWrapper.net_"),
    ("user-func", "sk", "BE416", "type(s) the environment's serving.ops do not trust: "
                                 "train.helpers.clip3"),
    ("generator-holder", "sk-own", "BE417", "skops cannot represent sklearn.pipeline.Pipeline"),
]


@pytest.mark.parametrize("training,env,code,message", REFUSED,
                         ids=[f"{c}-{t}@{e}" for t, e, c, _ in REFUSED])
def test_bad_input_is_a_diagnostic_and_no_artifact(repo, tmp_path, training, env, code,
                                                   message):
    out = tmp_path / "out"
    status, _, err = build(repo, training, env, "--out", str(out), "--format", "json")
    assert status == 1, err
    found = json.loads(_)["diagnostics"]
    mine = [d for d in found if d["code"] == code]
    assert mine and any(message in d["message"] for d in mine), found
    assert all(d["path"] for d in mine), mine  # located: the training file or the YAML line
    assert not out.exists()
    assert "Traceback" not in err


def test_refusals_point_at_the_yaml_line_that_forbids(repo):
    code, _, err = build(repo, "xgb", "ox-linear")
    text = (repo / "environments/ox-linear.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if t.strip() == "ops:")
    assert f"environments/ox-linear.yaml:{line}:3: error[BE406]" in err
    assert "hint: it is allowed in: ox, ox-multi, ox-tight, ox-warn" in err
    code, _, err = build(repo, "bad-output", "ox")
    source = (repo / "train/bad_torch.py").read_text().splitlines()
    line = next(i for i, t in enumerate(source, 1) if 'output="scores"' in t)
    assert f"train/bad_torch.py:{line}: error[BE415]" in err


def test_over_budget_names_the_measured_figure(repo, tmp_path):
    tight = repo / "environments" / "ox-tight.yaml"
    original = tight.read_text()
    tight.write_text(original.replace("parity: {atol: 0, rtol: 0}", "parity: {atol: 0.001}"))
    try:
        assert run(repo, "lock", "ox-tight")[0] == 0
        code, _, err = build(repo, "onnx-ready", "ox-tight", "--out", str(tmp_path / "o"))
    finally:
        tight.write_text(original)
        run(repo, "lock", "ox-tight")
    assert code == 1
    assert "error[BE414]: single-row predictions take " in err and "ms at p99 (over 1000 " \
        "evaluation rows" in err
    code, _, err = build(repo, "sk-lr", "ox-tight", "--out", str(tmp_path / "p"))
    assert code == 1 and "error[BE407]" in err and "(worst: row " in err


# --- fail fast: the pre-check ------------------------------------------------------------------

def test_precheck_refuses_a_training_only_input_before_the_full_fit(repo):
    started = time.monotonic()
    code, _, err = build(repo, "secret-slow", "sk")  # the full fit would sleep 600 s
    assert code == 1 and time.monotonic() - started < 110
    source = (repo / "train/secret_slow.py").read_text().splitlines()
    line = next(i for i, t in enumerate(source, 1) if '"secret", "y"' in t)
    assert "error[BE401]: model input 'secret' is training-only in environment sk" in err
    assert f"hint: the training reads it at train/secret_slow.py:{line}, and the model takes " \
        "it as an input" in err
    code, _, err = build(repo, "secret-slow-noprecheck", "sk")  # precheck = false
    assert code == 1 and "error[BE302]: training exceeded its time limit of 40 s" in err


def test_precheck_refuses_an_operator_while_the_full_fit_runs(repo, tmp_path):
    """The sample model's conversion runs beside the full fit; its refusal interrupts it."""
    out = tmp_path / "out"
    started = time.monotonic()
    code, _, err = build(repo, "xgb-slow", "ox-linear", "--out", str(out))  # full fit: 600 s
    assert code == 1 and time.monotonic() - started < 110, err
    assert "error[BE406]: ONNX operator ai.onnx.ml:TreeEnsembleClassifier" in err
    assert not out.exists()


# --- loading with the environment's trust ------------------------------------------------------

def test_skops_types_are_trusted_by_the_environment_not_the_file(repo, tmp_path):
    out = tmp_path / "xgb"
    assert build(repo, "xgb", "sk", "--out", str(out))[0] == 0
    lineage = read_lineage(out)
    project = Project.discover(repo)
    served = load_verified_model(project, out, lineage["model_digest"], "xgb",
                                 resolved(repo, "sk").env)
    mlmodel = (out / "MLmodel").read_text()
    assert "xgboost.core.Booster" in mlmodel  # MLflow's list: recorded, never trusted
    # an environment whose serving.ops do not allow XGBoost does not load the same bytes
    stricter = resolved(repo, "sk-own").env
    with pytest.raises(DiagnosticError) as caught:
        load_verified_model(project, out, lineage["model_digest"], "xgb", stricter)
    assert [d.code for d in caught.value.diagnostics] == ["BE773"]
    assert "xgboost.core.Booster" in caught.value.diagnostics[0].message
    # the artifact's own list is not consulted: widening it changes nothing but the digest
    (out / "MLmodel").write_text(mlmodel.replace("skops_trusted_types:",
                                                 "skops_trusted_types:\n    - posix.system"))
    with pytest.raises(DiagnosticError) as caught:
        load_verified_model(project, out, lineage["model_digest"], "xgb",
                            resolved(repo, "sk").env)
    assert [d.code for d in caught.value.diagnostics] == ["BE761"]
    assert served.predict_proba(_rows()).shape == (2, 2)


def test_the_served_skops_file_is_serialised_once(repo, tmp_path, monkeypatch):
    """Saving writes the canonical bytes already made: MLflow's skops writer neither
    serialises the model again nor loads it back (parity loads it, as serving does)."""
    import pandas as pd
    import skops.io
    from sklearn.linear_model import LogisticRegression

    from buildenv.training.families import adopt
    from buildenv.training.served_artifact import load_served, save_served
    from buildenv.training.skops_format import dumps

    env = resolved(repo, "sk").env
    rows = pd.DataFrame({"x1": [0.0, 1.0, 2.0, 3.0], "n1": [1, 2, 3, 4]})
    model = LogisticRegression().fit(rows, [False, False, True, True])

    def again(*args, **kwargs):
        raise AssertionError("the model was serialised (or loaded) a second time")

    monkeypatch.setattr(skops.io, "dump", again)
    monkeypatch.setattr(skops.io, "load", again)
    out = tmp_path / "model"
    saved = save_served(adopt(model, env), env, out, None)
    assert not saved.problems
    assert (out / "model.skops").read_bytes() == dumps(model)
    assert "serialization_format: skops" in (out / "MLmodel").read_text()
    monkeypatch.undo()
    served = load_served(out, saved, env)
    assert served.predict_proba(rows).shape == (4, 2)


def test_the_load_back_builds_skops_tree_of_the_saved_bytes_once(repo, tmp_path, monkeypatch):
    """The save checks the types of the bytes it made with skops' tree of them; the load back
    of the written file constructs that tree instead of reading the file's schema again."""
    import pandas as pd
    import skops.io._persist as persist
    import skops.io._utils as utils
    from sklearn.linear_model import LogisticRegression

    from buildenv.core.model_runtime import import_skops
    from buildenv.training.families import adopt
    from buildenv.training.served_artifact import load_served, save_served

    env = resolved(repo, "sk").env
    rows = pd.DataFrame({"x1": [0.0, 1.0, 2.0, 3.0], "n1": [1, 2, 3, 4]})
    model = LogisticRegression().fit(rows, [False, False, True, True])
    import_skops()
    reads: list[int] = []
    original = utils.read_schema

    def counted(zip_file):
        reads.append(1)
        return original(zip_file)

    monkeypatch.setattr(utils, "read_schema", counted)
    monkeypatch.setattr(persist, "read_schema", counted)
    out = tmp_path / "model"
    saved = save_served(adopt(model, env), env, out, None)
    served = load_served(out, saved, env)
    assert len(reads) == 1
    assert served.predict_proba(rows).tolist() == model.predict_proba(rows).tolist()


def _rows():
    import pandas as pd

    return pd.DataFrame({"x1": [1.0, -2.0], "x2": [None, 0.5], "n1": [3, 70],
                         "cat": ["a", "c"]})


def test_corrupted_onnx_in_dist_is_refused_before_it_is_parsed(repo):
    assert build(repo, "onnx-ready", "ox")[0] == 0
    artifact = repo / "dist/onnx-ready/ox"
    code, out, err = run(repo, "ops", "dist/onnx-ready/ox", "--config")
    assert code == 0, err
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    config = repo / "ops.config"
    config.write_text(out)
    required, _ = parse_config(str(config))
    assert required["ai.onnx"][18] == {"Concat", "IsNaN", "MatMul", "Sigmoid", "Sub", "Where"}
    code, out, err = run(repo, "ops", "ox")
    config.write_text(out)
    required, _ = parse_config(str(config))
    assert "TreeEnsembleClassifier" in required["ai.onnx.ml"][3]
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[len(data) // 2:] = b"\xff" * (len(data) - len(data) // 2)
    (artifact / "model.onnx").write_bytes(bytes(data))
    code, out, err = run(repo, "ops", "dist/onnx-ready/ox")
    assert code == 1 and "error[BE761]: the artifact at dist/onnx-ready/ox: its files hash " \
        "to" in err and out == ""
    code, out, err = run(repo, "image", "onnx-ready", "--env", "ox",
                         env={"DOCKER_HOST": f"unix://{repo}/none.sock"})
    assert code == 1 and "error[BE761]" in err


def test_ops_without_the_models_extra_names_it(repo, monkeypatch):
    """`buildenv ops` needs onnx for an ONNX environment's schemas: without the `models` extra
    it is BE026 naming the extra, not an ImportError."""
    from buildenv.compile.ops_report import ops_report
    from buildenv.core import extras

    monkeypatch.setattr(extras, "installed", lambda module: module != "onnx")
    with pytest.raises(DiagnosticError) as caught:
        ops_report(Project.discover(repo), "ox")
    assert [d.code for d in caught.value.diagnostics] == ["BE026"]
    assert caught.value.exit_code == 2
    assert "pip install 'buildenv[models]'" in str(caught.value)


# --- serving: the environment's classes and contract -------------------------------------------

def _serve(repo: Path, training: str, env: str) -> tuple[subprocess.Popen, int, Path]:
    code, out, err = run(repo, "image", training, "--env", env,
                         env={"DOCKER_HOST": f"unix://{repo}/none.sock"})
    assert code == 0, err
    ctx = repo / ".buildenv/image" / training / env
    port = free_port()
    log = ctx / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-S", str(ctx / "app/serve.py")], stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "PYTHONPATH": str(ctx / "site-packages"), "BUILDENV_MODEL": str(ctx / "model"),
             "PORT": str(port), "HOST": "127.0.0.1", "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return proc, port, log
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise AssertionError(log.read_text())


def _post(port: int, rows: list[dict]) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     data=json.dumps({"dataframe_records": rows}).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


ROW = {"x1": 1.5, "x2": None, "n1": 40, "cat": "a"}


def test_encoded_labels_answer_with_the_environment_classes(repo):
    assert build(repo, "xgb-multi", "ox-multi")[0] == 0
    lineage = read_lineage(repo / "dist/xgb-multi/ox-multi")
    assert lineage["classes"] == ["early", "late", "on_time"]
    assert lineage["evaluation"]["metrics"]["accuracy"] > 0.5
    proc, port, log = _serve(repo, "xgb-multi", "ox-multi")
    try:
        status, body = _post(port, [ROW, {**ROW, "x1": -9.0}])
        assert status == 200, body
        assert body["classes"] == ["early", "late", "on_time"]
        assert set(body["predictions"]) <= {"early", "late", "on_time"}
        assert body["predictions"] == [max(zip(p, body["classes"]))[1]
                                       for p in body["probabilities"]]
        status, body = _post(port, [{**ROW, "cat": "zzz"}])
        assert (status, body["column"]) == (400, "cat")
        assert body["error"] == ("row 0: served column 'cat' holds a value outside the domain "
                                 "declared by environment ox-multi")
        status, body = _post(port, [{**ROW, "n1": 101}])
        assert status == 400 and "outside the range" in body["error"]
    finally:
        stop(proc)
    info = json.loads((repo / ".buildenv/image/xgb-multi/ox-multi/image.json").read_text())
    assert "onnxruntime" in info["packages"] and "scikit-learn" not in info["packages"]


def test_validate_inputs_warn_predicts_and_counts(repo):
    assert build(repo, "mlp", "ox-warn")[0] == 0
    proc, port, log = _serve(repo, "mlp", "ox-warn")
    try:
        status, body = _post(port, [{**ROW, "n1": 500, "x1": 99.0, "cat": "zzz"}])
        assert status == 200 and body["predictions"][0] in (True, False), body  # cat: unread
        status, body = _post(port, [{**ROW, "n1": "many"}])
        assert (status, body["column"]) == (400, "n1")  # a wrong type is never predicted
    finally:
        stop(proc)
    assert "2 value(s) outside their declared domain or range predicted" in log.read_text()


# --- promotion scores the served model ---------------------------------------------------------

def test_promotion_scores_an_onnx_model_through_onnxruntime(repo, tracking):
    code, out, err = run(repo, "build", "mlp", "--env", "ox")
    assert code == 0, err
    code, out, err = run(repo, "promote", "mlp", "--env", "ox")
    assert code == 0, err
    lineage = read_lineage(repo / "dist/mlp/ox")
    auc = lineage["evaluation"]["metrics"]["roc_auc"]
    assert f"{auc:.4f}" in out + err


def test_pickle_is_an_explicit_opt_in(repo, tmp_path):
    out = tmp_path / "pk"
    assert build(repo, "sk-lr", "pk", "--out", str(out))[0] == 0
    assert (out / "model.pkl").is_file() and read_lineage(out)["format"] == "pickle"
    project = Project.discover(repo)
    digest = read_lineage(out)["model_digest"]
    load_verified_model(project, out, digest, "pk", resolved(repo, "pk").env)
    with pytest.raises(DiagnosticError) as caught:  # the default environment does not opt in
        load_verified_model(project, out, digest, "pk", resolved(repo, "sk").env)
    assert [d.code for d in caught.value.diagnostics] == ["BE773"]
    shutil.rmtree(out)


def test_library_versions_without_recorded_files_still_name_the_distribution(monkeypatch):
    """A PEX virtualenv (how `./pants build` runs a training) records only each `.dist-info`:
    `packages_distributions` cannot map `sklearn` there, and serving's pins would go
    unchecked (BE408). The distribution is found by the names it is published under."""
    from importlib import metadata

    import sklearn
    import xgboost

    from buildenv.training.families.base import library_versions
    from buildenv.training.installed import forget

    monkeypatch.setattr(metadata, "packages_distributions", lambda: {})
    forget()  # read once per process: read it again, patched
    try:
        found = library_versions(["sklearn", "xgboost"])
    finally:
        forget()
    assert found["scikit-learn"] == sklearn.__version__
    assert found["xgboost"] == xgboost.__version__
