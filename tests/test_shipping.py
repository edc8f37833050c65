"""Code ships with the model: each model family's artifact loads and serves in a fresh
interpreter, outside the repository, with only its locked serving environment installed.

Per family (scikit-learn with a class of the repository, XGBoost, LightGBM): build, write the
image context (its site-packages is the serving lock's environment), copy it out of the
repository, start the serving app on `python -S` with only that site-packages, and ask it for
predictions. A class the artifact cannot carry is refused at build time (BE356).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke_cli
from services import VALID as VALID_ROW
from services import free_port, make_churn_repo, post, stop, wait_for

pytestmark = pytest.mark.slow

PARTS = '''\
"""Model parts of the repository: shipped with every artifact whose model uses them."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Clip(BaseEstimator, TransformerMixin):
    """Clips numeric inputs into [low, high] (outliers from the billing system)."""

    def __init__(self, low=0.0, high=500.0):
        self.low, self.high = low, high

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), self.low, self.high)
'''

FAMILY = '''\
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

{imports}

FEATURES = ["tenure", "spend", "plan"]


def train(ctx):
    df = ctx.read("events", columns=["tenure", "spend", "plan", "churned"])
    X = df[FEATURES].copy()
    X["plan"] = X["plan"].astype(object)
    y = df["churned"].astype(bool).to_numpy()
    features = ColumnTransformer([
        ("plan", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan"]),
        ("numeric", {numeric}, ["tenure", "spend"]),
    ])
    return Pipeline([("features", features), ("model", {model})]).fit(X, y)
'''

FAMILIES = {
    # name: (imports, numeric step, model, serving ops, serving requirements)
    "custom": ("from sklearn.linear_model import LogisticRegression\n"
               "from models.parts import Clip", "Clip(high=400.0)",
               "LogisticRegression(random_state=ctx.seed)",
               ["sklearn.linear_model.LogisticRegression", "models.parts.Clip"],
               ["scikit-learn>=1.6,<2"]),
    "xgb": ("from sklearn.preprocessing import StandardScaler\nfrom xgboost import XGBClassifier",
            "StandardScaler()",
            "XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=ctx.seed)",
            ["xgboost.XGBClassifier"], ["scikit-learn>=1.6,<2", "xgboost-cpu==3.2.0"]),
    "lgbm": ("from sklearn.preprocessing import StandardScaler\n"
             "from lightgbm import LGBMClassifier", "StandardScaler()",
             "LGBMClassifier(n_estimators=20, num_leaves=7, n_jobs=1, verbose=-1, "
             "random_state=ctx.seed)",
             ["lightgbm.LGBMClassifier"], ["scikit-learn>=1.6,<2", "lightgbm==4.7.0"]),
}

ENTRY_CLASS = '''\
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline


class Half(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X * 0.5


def train(ctx):
    df = ctx.read("events", columns=["tenure", "spend", "churned"])
    X = df[["tenure", "spend"]]
    return Pipeline([("half", Half()), ("lr", LogisticRegression())]).fit(X, df["churned"])
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_churn_repo(tmp_path_factory.mktemp("shipping") / "repo")
    (root / "models").mkdir()
    (root / "models/__init__.py").write_text("")
    (root / "models/parts.py").write_text(PARTS)
    pyproject = (root / "pyproject.toml").read_text()
    for name, (imports, numeric, model, ops, requirements) in FAMILIES.items():
        (root / f"train_{name}.py").write_text(FAMILY.format(imports=imports, numeric=numeric,
                                                             model=model))
        pyproject += (f"\n[tool.buildenv.trainings.{name}]\nentry = \"train_{name}.py:train\"\n"
                      f"environments = [\"prod-{name}\"]\n")
        (root / f"environments/prod-{name}.yaml").write_text(
            f"name: prod-{name}\nextends: prod\nserving:\n  ops: [sklearn.pipeline.Pipeline, "
            f"sklearn.compose.ColumnTransformer, sklearn.preprocessing.*, {', '.join(ops)}]\n"
            f"  requirements: {json.dumps(requirements)}\n")
    (root / "train_entry.py").write_text(ENTRY_CLASS)
    pyproject += "\n[tool.buildenv.trainings.entry]\nentry = \"train_entry.py:train\"\n" \
                 "environments = [\"prod-custom\"]\n"
    (root / "pyproject.toml").write_text(pyproject)
    code, out, err = invoke_cli(["lock"], root)
    assert code == 0, out + err
    return root


def outside_context(repo: Path, training: str, env: str, where: Path) -> Path:
    """Build the pair, write its image context, and copy that out of the repository."""
    code, out, err = invoke_cli(["build", training, "--env", env, "--no-register"], repo)
    assert code == 0, out + err
    code, out, err = invoke_cli(["image", training, "--env", env], repo,
                                env={"DOCKER_HOST": f"unix://{where}/no-docker.sock"})
    assert code == 0, out + err
    target = where / "context"
    shutil.copytree(repo / ".buildenv/image" / training / env, target)
    return target


def fresh_python(context: Path, *args: str, extra_path: str = "", **kw):
    """`python -S` with only the vendored site-packages: no repository, no buildenv."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": str(context / "site-packages") + extra_path, **kw.pop("env", {})}
    return subprocess.Popen([sys.executable, "-S", *args], cwd=context, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_serves_outside_the_repository(repo: Path, tmp_path: Path, family: str):
    env = f"prod-{family}"
    context = outside_context(repo, family, env, tmp_path)
    lineage = json.loads((context / "model/buildenv.json").read_text())
    vendored = json.loads((context / "image.json").read_text())["packages"]
    match = {k.lower().replace("_", "-"): v for k, v in vendored.items()}
    locked = lineage["toolchain"]["packages"]
    for library, version in lineage["libraries"].items():  # trained with = served with
        if library in locked:  # (not an import name also recorded: `xgboost` of xgboost-cpu)
            assert match.get(library) == version, (library, version, vendored)
    family_library = {"custom": "scikit-learn", "xgb": "xgboost-cpu", "lgbm": "lightgbm"}[family]
    assert match[family_library] == lineage["libraries"][family_library]
    assert "mlflow-skinny" not in {k.lower() for k in vendored}  # only what serving runs
    port = free_port()
    proc = fresh_python(context, str(context / "app/serve.py"), env={
        "BUILDENV_MODEL": str(context / "model"), "PORT": str(port), "HOST": "127.0.0.1"})
    try:
        wait_for(lambda: post(port, {"dataframe_records": [VALID_ROW]})[0] == 200, 120,
                 f"the {family} serving app", proc)
        status, body = post(port, {"dataframe_records": [VALID_ROW, {**VALID_ROW,
                                                                     "tenure": 99.0}]})
        assert status == 200 and len(body["predictions"]) == 2, body
    finally:
        stop(proc)


def test_repository_classes_load_from_the_shipped_code_only(repo: Path, tmp_path: Path):
    context = outside_context(repo, "custom", "prod-custom", tmp_path)
    lineage = json.loads((context / "model/buildenv.json").read_text())
    assert lineage["code_modules"] == ["models.parts"]
    assert (context / "model/code/models/parts.py").read_text() == PARTS
    assert not (context / "model/code/train_custom.py").exists()  # the training is not shipped
    load = ("import skops.io as sio; p = 'model/model.skops'; "
            "m = sio.load(p, trusted=sio.get_untrusted_types(file=p)); "
            "print(type(m.steps[0][1].transformers_[1][1]).__module__)")
    without = fresh_python(context, "-c", load)
    out = without.communicate(timeout=120)[0].decode()
    assert without.returncode != 0 and "No module named 'models'" in out
    shipped = fresh_python(context, "-c", load, extra_path=os.pathsep + str(context / "model/code"))
    out = shipped.communicate(timeout=120)[0].decode()
    assert shipped.returncode == 0 and out.strip() == "models.parts", out


def test_a_class_of_the_entry_module_cannot_be_shipped(repo: Path):
    yaml = repo / "environments/prod-custom.yaml"
    code, out, err = invoke_cli(["build", "entry", "--env", "prod-custom", "--no-register"], repo)
    assert code == 1
    assert ("train_entry.py: error[BE356]: the model refers to train_entry.Half, defined in the "
            "training's entry module train_entry.py: loading the model would import, and so "
            "run, the training module") in err, err
    assert "move Half into a module of its own" in err and yaml.is_file()
    assert not (repo / "dist/entry/prod-custom").exists()


# --- what the pickled model refers to ---------------------------------------------------------

def test_references_are_read_from_the_pickle_stream():
    import pickle

    import numpy as np

    from buildenv.training.shipping import referenced_globals

    value = {"a": np.float64(1.5), "b": [np.dtype("int8"), OrderedThing()], "c": json.dumps}
    for protocol in (2, 4, 5):  # GLOBAL, and STACK_GLOBAL with memoized names
        found = referenced_globals(pickle.dumps(value, protocol=protocol))
        assert {("json", "dumps"), (__name__, "OrderedThing")} <= found, protocol
        assert any(module.startswith("numpy") for module, _ in found)


class OrderedThing:
    pass


def test_classes_that_cannot_be_shipped_are_named(tmp_path: Path, monkeypatch):
    from buildenv.core.diagnostics import Diagnostic
    from buildenv.training.shipping import model_needs

    root = tmp_path / "repo"
    (root / "train").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "stray.py").write_text("class Stray:\n    pass\n")
    monkeypatch.syspath_prepend(str(outside))
    import stray

    needs = model_needs([stray.Stray()], root, "train/demo.py")
    assert [d["code"] for d in needs.problems] == ["BE356"]
    assert "stray.Stray, from" in needs.problems[0]["message"]
    assert "neither the repository nor the training's environment" in needs.problems[0]["message"]
    needs = model_needs([Diagnostic("BE001", "x")], root, "train/demo.py")
    assert "buildenv.core.diagnostics.Diagnostic, buildenv.core.diagnostics.Severity, " \
           "buildenv's own code" in \
        needs.problems[0]["message"]
    assert model_needs([1.5, "text"], root, "train/demo.py").problems == []


def test_installed_distributions_are_read_once_with_the_same_answers(tmp_path: Path,
                                                                      monkeypatch):
    """The model's library versions and what loading it needs both come from one reading of
    the installed distributions, and say what two fresh readings say."""
    from importlib import metadata

    from sklearn.linear_model import LogisticRegression

    from buildenv.training import installed
    from buildenv.training.families.base import library_versions
    from buildenv.training.shipping import model_needs

    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    root = tmp_path / "repo"
    (root / "train").mkdir(parents=True)
    installed.forget()
    uncached = (library_versions(["numpy", "sklearn"]), model_needs(model, root, "t.py"))
    installed.forget()
    uncached_again = (library_versions(["numpy", "sklearn"]), model_needs(model, root, "t.py"))
    readings = []
    read = metadata.packages_distributions

    def counted():
        readings.append(1)
        return read()

    installed.forget()
    monkeypatch.setattr(installed.metadata, "packages_distributions", counted)
    try:
        cached = (library_versions(["numpy", "sklearn"]), model_needs(model, root, "t.py"))
    finally:
        installed.forget()
    assert len(readings) == 1
    assert cached == uncached == uncached_again
    assert cached[0]["scikit-learn"] == cached[1].libraries["scikit-learn"]


def test_a_pex_venv_still_names_the_models_libraries(tmp_path: Path, monkeypatch):
    """A PEX virtualenv (how `./pants build` runs a training) records no files of its
    distributions, so `packages_distributions` maps nothing: what loading the model needs is
    still found by the names its packages are published under, as the model's library
    versions are (`sklearn` -> scikit-learn)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    from buildenv.training import installed
    from buildenv.training.shipping import model_needs

    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    (tmp_path / "train").mkdir()
    monkeypatch.setattr(installed.metadata, "packages_distributions", lambda: {})
    installed.forget()
    try:
        needs = model_needs(model, tmp_path, "t.py")
    finally:
        installed.forget()
    assert needs.libraries["scikit-learn"] == sklearn.__version__
