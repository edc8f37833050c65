"""Optional (`[buildenv].register`): log and register a packaged model in MLflow tracking.

A side effect on a tracking server is not a build output, so it is never cached:
it runs once per Pants run and model, and `buildenv register` itself is idempotent
(an identical artifact does not become a new model version).
"""

from __future__ import annotations

from dataclasses import dataclass

from pants.base.build_root import BuildRoot
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import Digest, MergeDigests
from pants.engine.process import ProcessCacheScope, ProcessResult
from pants.engine.rules import Get, collect_rules, rule
from pants.util.frozendict import FrozenDict
from pants.util.logging import LogLevel

from buildenv_pants.config import BuildenvConfig
from buildenv_pants.sandbox import BuildenvProcess, MlModelSandbox
from buildenv_pants.subsystem import Buildenv
from buildenv_pants.target_types import MlModelFieldSet

TRACKING_URI_VAR = "BUILDENV_TRACKING_URI"


@dataclass(frozen=True)
class RegisterModelRequest:
    field_set: MlModelFieldSet
    sandbox: MlModelSandbox
    artifact: Digest  # holds `out_dir`
    out_dir: str


@dataclass(frozen=True)
class RegisteredModel:
    log_lines: tuple[str, ...]


@dataclass(frozen=True)
class TrackingUri:
    uri: str


@rule(desc="Resolve the MLflow tracking URI", level=LogLevel.DEBUG)
async def tracking_uri(buildenv: Buildenv, config: BuildenvConfig, build_root: BuildRoot) -> TrackingUri:
    if buildenv.tracking_uri:
        return TrackingUri(buildenv.tracking_uri)
    env = await Get(EnvironmentVars, EnvironmentVarsRequest([TRACKING_URI_VAR]))
    if env.get(TRACKING_URI_VAR):
        return TrackingUri(env[TRACKING_URI_VAR])
    if config.tracking_uri:
        return TrackingUri(config.tracking_uri)
    return TrackingUri(f"sqlite:///{build_root.path}/{config.cache_dir}/mlflow.db")


@rule(desc="Register an ML model in MLflow tracking", level=LogLevel.DEBUG)
async def register_model(request: RegisterModelRequest, uri: TrackingUri) -> RegisteredModel:
    fs = request.field_set
    digest = await Get(Digest, MergeDigests([request.sandbox.digest, request.artifact]))
    sandbox = MlModelSandbox(request.sandbox.venv_pex, digest, request.sandbox.source_roots)
    result = await Get(
        ProcessResult,
        BuildenvProcess(
            sandbox,
            argv=("register", request.out_dir, "--training", fs.training, "--env", fs.env_name),
            description=f"buildenv register {fs.training} --env {fs.env_name}",
            # Hashable: the engine memoizes requests (a dict here was `unhashable type`).
            extra_env=FrozenDict({TRACKING_URI_VAR: uri.uri}),
            cache_scope=ProcessCacheScope.PER_SESSION,
        ),
    )
    lines = (result.stdout.decode() + result.stderr.decode()).strip().splitlines()
    return RegisteredModel(tuple(lines))


def rules():
    return collect_rules()
