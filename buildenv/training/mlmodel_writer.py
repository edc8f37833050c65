"""MLflow's model directory for a skops scikit-learn model, written without importing MLflow.

`import mlflow.sklearn` is a second of Python in the training process, and the requirement
check of its `save_model` reads every installed distribution's metadata: run beside the fit,
that work holds the interpreter lock the fit's own Python steps need, so the fit pays for
most of it. For the configuration the scikit-learn stack saves by default (skops bytes
already made, the environment's pinned requirements, no repository code) the directory is
small and plain: `MLmodel`, `conda.yaml`, `python_env.yaml`, `requirements.txt` and the model
file. This module writes those files as `mlflow.sklearn.save_model` does (a test compares
both, file by file, so an MLflow upgrade that changes the format fails it).

`writes(...)` says when it applies: requirements every one a plain PEP 508 requirement (no
file references, no duplicates, no MLflow pin of the user's own), no repository code to ship,
MLflow's version readable from its installed files, and none of the environment variables
that change what MLflow writes (dependency locking, Databricks, MLflow's test mode). Otherwise
the caller lets MLflow write the directory.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import uuid
from collections.abc import Sequence
from importlib import metadata, util
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from buildenv.env.spec import OnnxServing
from buildenv.training.signature import ServedSignature

__all__ = ["mlflow_saves", "mlflow_version", "write_onnx_model", "write_skops_model", "writes"]

# What makes MLflow's save write something else (see the module docstring).
_MLFLOW_SETTINGS = ("MLFLOW_LOCK_MODEL_DEPENDENCIES", "MLFLOW_TESTING", "DATABRICKS_ENV_VERSION",
                    "DATABRICKS_RUNTIME_VERSION")
_MLFLOW_NAMES = {"mlflow", "mlflow-skinny", "mlflow-tracing"}
_VERSION_LINE = re.compile(r'^VERSION = "([^"]+)"$', re.MULTILINE)
_MODEL_FILE = "model.skops"
_ONNX_FILE = "model.onnx"
_ONNX_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")  # MLflow's default


def mlflow_version() -> str | None:
    """The installed MLflow's `VERSION`, read from its `version.py` (importing `mlflow.version`
    would import all of `mlflow`); None when MLflow is not installed or the file says
    something else."""
    try:
        spec = util.find_spec("mlflow")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        try:
            text = (Path(location) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        found = _VERSION_LINE.search(text)
        if found is not None:
            return found.group(1)
    return None


def _plain_requirements(requirements: Sequence[str] | None) -> list[str] | None:
    """The requirements as MLflow writes them (`str(Requirement(...))`), when each is one
    plain requirement MLflow would keep as it is; None otherwise."""
    if requirements is None:
        return None
    out: list[str] = []
    names: set[str] = set()
    for line in requirements:
        if not isinstance(line, str) or line != line.strip() or not line or \
                line.startswith("-") or "#" in line or line.endswith("\\"):
            return None
        try:
            parsed = Requirement(line)
        except InvalidRequirement:
            return None
        name = parsed.name.lower()
        if name in names or name in _MLFLOW_NAMES or name == "databricks-connect":
            return None  # MLflow merges duplicates, keeps a user's pin, drops pyspark: its own
        names.add(name)
        out.append(str(parsed))
    return out


def writes(requirements: Sequence[str] | None, code_paths: Sequence[str] | None) -> bool:
    """Whether `write_skops_model` writes what `mlflow.sklearn.save_model` would."""
    if code_paths or _plain_requirements(requirements) is None:
        return False
    if any(os.environ.get(name) is not None for name in _MLFLOW_SETTINGS):
        return False
    version = mlflow_version()
    if version is None:
        return False
    try:
        return not Version(version).is_devrelease
    except InvalidVersion:
        return False


def mlflow_saves(env: Any, code_paths: Sequence[str] | None = None) -> bool:
    """Whether saving the served model imports MLflow: always for pickles; for a skops file
    or an ONNX graph only when this module cannot write what MLflow would."""
    serving = env.serving
    if serving is None or (not isinstance(serving, OnnxServing) and serving.format != "skops"):
        return True
    return not writes(list(serving.requirements), code_paths)


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _dump(data: Any, *, sort_keys: bool = True) -> bytes:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=sort_keys).encode("utf-8")


def _prepared(out: Path, requirements: Sequence[str]) -> tuple[str, list[str]]:
    """(MLflow's version, the requirements as MLflow writes them), with `out` made empty."""
    version = mlflow_version()
    pins = _plain_requirements(requirements)
    assert version is not None and pins is not None, "a model written without writes()"
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"Path '{out}' already exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    return version, pins


def _python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def _python_function(loader: str, **where: str) -> dict[str, Any]:
    """MLflow's `python_function` flavor entry (`pyfunc.add_to_model`)."""
    return {**where, "loader_module": loader, "python_version": _python(),
            "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}}


def _finish(out: Path, version: str, pins: list[str], flavors: dict[str, Any],
            signature: ServedSignature | None, metadata_: dict[str, Any]) -> None:
    """`MLmodel` (its size: the files written so far, as MLflow counts them) and the
    environment files, after the model file."""
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    mlmodel: dict[str, Any] = {
        "utc_time_created": str(dt.datetime.now(dt.UTC).replace(tzinfo=None)),
        "flavors": flavors, "model_uuid": uuid.uuid4().hex, "mlflow_version": version,
        "metadata": metadata_, "prompts": None, "model_id": None}
    if size:
        mlmodel["model_size_bytes"] = size
    if signature is not None:
        mlmodel["signature"] = signature.to_dict()
        mlmodel["is_signature_from_type_hint"] = False
        mlmodel["type_hint_from_example"] = False
    (out / "MLmodel").write_bytes(_dump(mlmodel))
    python = _python()
    pip = [f"mlflow=={version}", *pins]
    pip_version = _package_version("pip")
    conda = {"name": "mlflow-env", "channels": ["conda-forge"],
             "dependencies": [f"python={python}",
                              f"pip<={pip_version}" if pip_version is not None else "pip",
                              {"pip": pip}]}
    (out / "conda.yaml").write_bytes(_dump(conda))
    (out / "requirements.txt").write_bytes("\n".join(pip).encode("utf-8"))
    build = []
    for tool in ("pip", "setuptools", "wheel"):
        found = _package_version(tool)
        build.append(f"{tool}=={found}" if found else tool)
    python_env = {"python": python, "build_dependencies": build,
                  "dependencies": ["-r requirements.txt"]}
    (out / "python_env.yaml").write_bytes(_dump(python_env, sort_keys=False))


def write_skops_model(out: Path, data: bytes, model: Any, signature: ServedSignature | None,
                      requirements: Sequence[str], trusted_types: list[str],
                      metadata_: dict[str, Any]) -> None:
    """Write the MLflow model directory `out` (absent or empty) for the skops bytes `data` of
    `model`: what `mlflow.sklearn.save_model(model, out, signature=..., pip_requirements=...,
    serialization_format="skops", skops_trusted_types=..., metadata=...)` writes, with MLflow's
    random uuid and creation time (which `compile.artifact.finalize_mlmodel` replaces). Call
    only when `writes(requirements, None)`."""
    import sklearn  # the model's own library: imported already

    version, pins = _prepared(out, requirements)
    (out / _MODEL_FILE).write_bytes(data)
    flavors: dict[str, Any] = {}
    if hasattr(model, "predict"):  # MLflow's python_function needs `predict`
        flavors["python_function"] = _python_function("mlflow.sklearn", model_path=_MODEL_FILE,
                                                      predict_fn="predict")
    flavors["sklearn"] = {"pickled_model": _MODEL_FILE, "sklearn_version": sklearn.__version__,
                          "serialization_format": "skops", "code": None,
                          "skops_trusted_types": trusted_types}
    _finish(out, version, pins, flavors, signature, metadata_)


def write_onnx_model(out: Path, proto: Any, signature: ServedSignature | None,
                     requirements: Sequence[str], metadata_: dict[str, Any]) -> None:
    """Write the MLflow model directory `out` (absent or empty) for the ONNX graph `proto`:
    what `mlflow.onnx.save_model(proto, out, signature=..., pip_requirements=...,
    save_as_external_data=False, metadata=...)` writes (random uuid and time as above). Call
    only when `writes(requirements, None)`."""
    import onnx  # the graph's own library: imported already

    version, pins = _prepared(out, requirements)
    onnx.save_model(proto, str(out / _ONNX_FILE), save_as_external_data=False)
    flavors = {"python_function": _python_function("mlflow.onnx", data=_ONNX_FILE),
               "onnx": {"onnx_version": onnx.__version__, "data": _ONNX_FILE,
                        "providers": list(_ONNX_PROVIDERS), "onnx_session_options": None,
                        "code": None}}
    _finish(out, version, pins, flavors, signature, metadata_)
