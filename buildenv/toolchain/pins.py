"""What buildenv's own runner needs inside a training's environment, at buildenv's pins.

The runner (`python -m buildenv.training.runner`) runs from buildenv's source, which is put on
the training interpreter's path alone: none of buildenv's other dependencies come with it.
It imports pydantic (the environment's format), pyarrow, NumPy and pandas (the data gate),
scikit-learn (introspection, scoring, importance), MLflow's client and skops (saving the
model, pickle-free) and blake3 (verifying reads pinned with blake3); the `onnx` serving stack adds the converter and
the runtime it checks parity with. These pins equal those of pyproject.toml (a test checks),
so a training's environment holds the versions buildenv is tested with, unless the training
asks for another version of the same distribution: then its requirement wins.
"""

from __future__ import annotations

__all__ = ["PRIVATE_RELEASE", "RUNNER", "SERVING_APP", "STACKS"]

RUNNER: dict[str, str] = {
    "pydantic": "2.14.4",
    "numpy": "2.4.6",
    "pandas": "3.1.1",
    "pyarrow": "25.0.1",
    "scikit-learn": "1.9.1",
    "mlflow-skinny": "3.17.2",
    "skops": "0.16.0",
    "blake3": "1.0.11",
}

# What each serving stack adds to the training's environment: the build converts and checks
# the model with it.
STACKS: dict[str, dict[str, str]] = {
    "sklearn": {},
    "onnx": {"skl2onnx": "1.20.0", "onnx": "1.23.2", "onnxruntime": "1.32.0"},
}

# What an environment with `privacy.release: dp` adds: the training releases its evaluation's
# slice figures with OpenDP's counting and noise (buildenv/training/slice_dp.py), inside the
# training process; without it the figures would be withheld (BE516).
PRIVATE_RELEASE: dict[str, str] = {"opendp": "0.16.0"}

# What the serving app (buildenv/serving/serve.py with core/model_runtime.py) needs beside
# `serving.requirements` to load and feed a model, per artifact format: an ONNX graph is fed
# NumPy arrays, a skops file or a pickle pandas DataFrames. Their versions come from the lock
# the model was trained with.
SERVING_APP: dict[str, tuple[str, ...]] = {
    "onnx": ("numpy",),
    "skops": ("pandas", "skops"),
    "pickle": ("pandas", "cloudpickle"),
}
