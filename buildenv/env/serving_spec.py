"""The serving section of an environment (SPEC §2): which runtime the compiled model must run
on, what it may contain, and the budgets serving holds it to. One model per stack, chosen by
`stack`; verification (compile/verify.py) and the serving image read them."""

# Annotations not postponed: see `buildenv.env.spec_base`.
import fnmatch
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from buildenv.env.spec_base import Strict

__all__ = ["Limits", "OnnxServing", "Parity", "Serving", "SklearnServing", "op_allowed"]


class Parity(Strict):
    """How closely the served model must agree with the trained one on the evaluation rows."""

    atol: Annotated[float, Field(ge=0)] = 1e-5
    """Absolute tolerance on each probability (classifiers) or value (regressors)."""
    rtol: Annotated[float, Field(ge=0)] = 1e-5
    """Relative tolerance, of the trained model's value: a row agrees when
    `|served - trained| <= atol + rtol * |trained|`."""


class Limits(Strict):
    """Serving budgets: production parameters the training cannot change."""

    max_model_mb: Annotated[float, Field(gt=0)] | None = None
    """Largest artifact (every file of the model directory but the lineage), in MiB."""
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    """Largest p99 latency of a single-row prediction in the serving runtime, in
    milliseconds, measured at compile on up to 1,000 evaluation rows (recorded in the
    lineage)."""
    max_image_mb: Annotated[float, Field(gt=0)] | None = None
    """The largest serving image, in MB (10^6 bytes), the platform runs: `buildenv image`
    refuses a bigger one (BE757)."""


class SklearnServing(Strict):
    """Serving runs scikit-learn-API models (MLflow's sklearn flavor), saved with skops."""

    stack: Literal["sklearn"]
    """The serving runtime."""
    ops: list[str]
    """Allow-list of fully qualified classes the runtime can run; `fnmatch` globs such as
    `sklearn.linear_model.*`. Every class in the fitted model must match one; they are also
    the only types a skops file may hold beyond skops' own safe types."""
    requirements: list[str] = ["scikit-learn"]
    """Pinned requirements the serving image installs (pip specifiers). A model trained with a
    version outside them is refused."""
    format: Literal["skops", "pickle"] = "skops"
    """How the model is saved: `skops` (no code runs when it is loaded) or `pickle`
    (cloudpickle: an explicit opt-in for models skops cannot represent)."""
    parity: Parity = Parity()
    """The saved model, loaded back as serving loads it, against the trained one."""
    limits: Limits = Limits()
    """Serving budgets."""
    validate_inputs: Literal["reject", "warn"] = "reject"
    """What the serving app does with a request value outside its column's declared dtype,
    domain or range: answer 400 (`reject`), or predict and log a warning (`warn`)."""


class OnnxServing(Strict):
    """Serving runs ONNX graphs with onnxruntime."""

    stack: Literal["onnx"]
    """The serving runtime."""
    opset: Annotated[int, Field(ge=7, le=30)]
    """Highest default-domain (`ai.onnx`) opset the runtime supports."""
    ops: list[str] = ["ai.onnx:*", "ai.onnx.ml:*"]
    """Allow-list of ONNX operators the runtime can run, as `domain:op_type` globs
    (`ai.onnx:*`, `ai.onnx.ml:TreeEnsemble*`); every node of the graph, subgraphs included,
    must match one."""
    max_ir_version: Annotated[int, Field(ge=3)] | None = None
    """Highest ONNX IR version the runtime loads; absent: not checked."""
    requirements: list[str] = ["onnxruntime"]
    """Pinned requirements the serving image installs."""
    format: Literal["onnx", "onnx+native"] = "onnx"
    """What the artifact holds: the ONNX graph only, or also the native model (skops for
    scikit-learn-API models) for inspection and retraining."""
    parity: Parity = Parity()
    """onnxruntime against the trained model."""
    limits: Limits = Limits()
    """Serving budgets."""
    validate_inputs: Literal["reject", "warn"] = "reject"
    """What the serving app does with a request value outside its column's declared dtype,
    domain or range: answer 400 (`reject`), or predict and log a warning (`warn`)."""

    @field_validator("ops")
    @classmethod
    def _operators(cls, value: list[str]) -> list[str]:
        for pattern in value:
            domain, colon, op_type = pattern.partition(":")
            if not colon or not domain or not op_type:
                raise PydanticCustomError(
                    "onnx_ops", "serving.ops of the onnx stack lists ONNX operators as "
                    "domain:op_type globs (`ai.onnx:Gemm`, `ai.onnx.ml:TreeEnsemble*`); "
                    "'{pattern}' is not one (an inherited scikit-learn class list must be "
                    "restated for the onnx stack)", {"pattern": pattern})
        return value


Serving = Annotated[Union[SklearnServing, OnnxServing], Field(discriminator="stack")]


def op_allowed(class_path: str, patterns: list[str]) -> bool:
    """Whether a class path (sklearn stack) or a `domain:op_type` operator (onnx stack)
    matches one of the allow-list's globs."""
    return any(fnmatch.fnmatchcase(class_path, p) for p in patterns)
