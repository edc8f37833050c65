"""The model as serving will load it: written as an MLflow model directory, then loaded back.

| stack | `serving.format` | model file | MLflow flavor |
| --- | --- | --- | --- |
| `sklearn` | `skops` (default) | `model.skops` (canonical bytes) | sklearn, `serialization_format: skops` |
| `sklearn` | `pickle` | `model.pkl` (cloudpickle) | sklearn, `serialization_format: cloudpickle` |
| `onnx` | `onnx` (default) | `model.onnx` | onnx (plus python_function) |
| `onnx` | `onnx+native` | `model.onnx`, and `native/` (skops, or a PyTorch state dict) | onnx |

The descriptor `model_runtime` loads by (format, file, inputs, task, classes, encoded labels)
goes into `MLmodel` as metadata `buildenv`: it is part of the artifact digest. A skops file may
hold only types the environment trusts (`serving.ops`); any other is BE416, with the saved
bytes never loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildenv.core.model_runtime import (
    ModelLoadError,
    ServedModel,
    SkopsTree,
    load,
    trusted_patterns,
)
from buildenv.env.spec import Environment, OnnxServing
from buildenv.training.families.base import Family, FamilyError, Problem, column_kinds
from buildenv.training.mlmodel_writer import mlflow_saves, write_onnx_model, write_skops_model
from buildenv.training.signature import ServedSignature
from buildenv.training.skops_format import dumps, read_tree, refused_types

# Deferred imports (mlflow, onnx): MLflow's flavors are imported when a model is saved by
# MLflow (the runner imports MLflow in a thread while the training runs, `mlflow_saves`); a
# skops file's or an ONNX graph's directory is written without MLflow where `mlmodel_writer`
# writes the same files.

__all__ = ["Saved", "load_served", "save_served"]


@dataclass
class Saved:
    descriptor: dict | None = None
    onnx: Any = None  # the ModelProto (onnx stack)
    problems: list[Problem] = field(default_factory=list)
    libraries: dict[str, str] = field(default_factory=dict)
    skops: SkopsTree | None = None  # skops' tree of the saved bytes, for the load back


def _plain(values: list | None) -> list | None:
    if values is None:
        return None
    return [v.item() if hasattr(v, "item") else v for v in values]


def descriptor(family: Family, fmt: str, file: str, encoded: bool) -> dict:
    return {"format": fmt, "file": file, "family": family.kind, "inputs": family.inputs,
            "task": family.task, "classes": _plain(family.classes), "encoded_labels": encoded}


def convert(family: Family, env: Environment) -> Any:
    """The family's ONNX graph at the environment's opset (FamilyError BE405 on failure)."""
    serving = env.serving
    assert isinstance(serving, OnnxServing)
    return family.to_onnx(column_kinds(env, family.inputs or []), serving.opset)


def save_served(family: Family, env: Environment, out: Path,
                signature: ServedSignature | None, proto: Any = None,
                code_paths: list[str] | None = None) -> Saved:
    """Write the served model to `out` (an MLflow model directory). `proto`: an ONNX graph
    already converted (the onnx stack). `code_paths`: the repository code the native model
    needs, staged at its import paths (MLflow puts it on the path when it loads the model)."""
    serving = env.serving
    requirements = list(serving.requirements) if serving else None
    code = code_paths or None
    saved = Saved()
    mlflow_signature = signature.to_mlflow() if signature is not None and \
        mlflow_saves(env, code_paths) else None
    if isinstance(serving, OnnxServing):
        import onnx

        saved.descriptor = descriptor(family, "onnx", "model.onnx", family.onnx_encoded_labels())
        if mlflow_saves(env, code_paths):
            import mlflow.onnx

            mlflow.onnx.save_model(proto, str(out), signature=mlflow_signature,
                                   pip_requirements=requirements, save_as_external_data=False,
                                   code_paths=code, metadata={"buildenv": saved.descriptor})
        else:
            write_onnx_model(out, proto, signature, list(serving.requirements),
                             {"buildenv": saved.descriptor})
        saved.libraries = {"onnx": onnx.__version__}
        if serving.format == "onnx+native":
            family.save_native(out / "native")
        return saved
    fmt = serving.format if serving is not None else "skops"
    if fmt == "pickle":
        import mlflow.sklearn

        saved.descriptor = descriptor(family, "pickle", "model.pkl", family.encoded_labels)
        try:
            mlflow.sklearn.save_model(family.model, str(out), signature=mlflow_signature,
                                      pip_requirements=requirements,
                                      serialization_format="cloudpickle", code_paths=code,
                                      metadata={"buildenv": saved.descriptor})
        except Exception as exc:
            raise FamilyError("BE417", f"cloudpickle cannot save {family.model_class} either: "
                              f"{type(exc).__name__}: {str(exc).strip()[:200]}") from None
        return saved
    try:
        data = dumps(family.model)
    except Exception as exc:
        raise FamilyError("BE417", f"skops cannot represent {family.model_class}: "
                          f"{type(exc).__name__}: {str(exc).strip()[:200]}",
                          ("set serving.format: pickle to save it with cloudpickle (an "
                           "explicit opt-in: loading a pickle can run code)",)) from None
    untrusted, tree = read_tree(data)
    refused = refused_types(data, serving.ops if serving is not None else [], untrusted)
    if refused:
        saved.problems.append(Problem(
            "BE416", f"the skops file would hold type(s) the environment's serving.ops do not "
            f"trust: {', '.join(refused)}",
            ("add the class that holds them to serving.ops if production runs it, or set "
             "serving.format: pickle",)))
        return saved
    saved.descriptor = descriptor(family, "skops", "model.skops", family.encoded_labels)
    saved.skops = tree
    if not mlflow_saves(env, code_paths):
        assert requirements is not None  # a skops serving section: `mlflow_saves` checked
        write_skops_model(out, data, family.model, signature, requirements, untrusted,
                          {"buildenv": saved.descriptor})
        return saved
    import mlflow.sklearn

    with _written_as(mlflow.sklearn, data):
        mlflow.sklearn.save_model(family.model, str(out), signature=mlflow_signature,
                                  pip_requirements=requirements, serialization_format="skops",
                                  skops_trusted_types=untrusted, code_paths=code,
                                  metadata={"buildenv": saved.descriptor})
    (out / "model.skops").write_bytes(data)  # the canonical bytes: same model, same file
    return saved


@contextmanager
def _written_as(flavor: Any, data: bytes) -> Iterator[None]:
    """MLflow's skops save serialises the model once more and loads it back to check its
    types (about a second for a large ensemble); the build has the canonical bytes already,
    has checked their types against `serving.ops`, and loads them back as serving does for
    parity. So MLflow's writer (`_save_model`, private: when it is not there, MLflow's own
    path runs and the canonical bytes replace its file) writes those bytes instead."""
    original = getattr(flavor, "_save_model", None)
    if original is None:
        yield
        return

    def write(sk_model: Any, output_path: Any, serialization_format: Any, *args: Any,
              **kwargs: Any) -> Any:
        if serialization_format != "skops":
            return original(sk_model, output_path, serialization_format, *args, **kwargs)
        Path(output_path).write_bytes(data)
        return None

    flavor._save_model = write
    try:
        yield
    finally:
        flavor._save_model = original


def load_served(out: Path, saved: Saved, env: Environment, threads: int | None = None
                ) -> ServedModel:
    """The saved model, loaded back exactly as serving loads it (from skops' tree of the bytes
    the save checked, when the file holds those bytes: the same tree, built once)."""
    serving = env.serving
    ops = list(serving.ops) if serving is not None else []
    known, saved.skops = saved.skops, None
    try:
        return load(str(out), saved.descriptor or {}, trusted_patterns(ops),
                    allow_pickle=(saved.descriptor or {}).get("format") == "pickle",
                    threads=threads, known=known)
    except ModelLoadError as exc:
        raise FamilyError("BE415", f"the saved model cannot be loaded as serving loads it: "
                          f"{exc}") from None
