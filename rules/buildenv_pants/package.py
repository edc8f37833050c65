"""`pants package`: build each `ml_model` into `dist/<training>/<env>/`, like `buildenv build`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pants.base.build_root import BuildRoot
from pants.core.goals.package import BuiltPackage, BuiltPackageArtifact, PackageFieldSet
from pants.engine.engine_aware import EngineAwareReturnType
from pants.engine.fs import Digest, RemovePrefix
from pants.engine.process import FallibleProcessResult
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel

from buildenv_pants.phases import BuildSummary, build_summary
from buildenv_pants.register_model import RegisteredModel, RegisterModelRequest
from buildenv_pants.sandbox import BuildenvProcess, MlModelSandbox
from buildenv_pants.subsystem import Buildenv
from buildenv_pants.target_types import (
    MlEntryField,
    MlEnvField,
    MlModelFieldSet,
    MlSeedField,
    MlTimeoutField,
)

OUT = "__out"


@dataclass(frozen=True)
class MlModelPackageFieldSet(PackageFieldSet):
    required_fields = (MlEntryField, MlEnvField)

    entry: MlEntryField
    env: MlEnvField
    seed: MlSeedField
    timeout: MlTimeoutField

    def model(self) -> MlModelFieldSet:
        return MlModelFieldSet(self.address, self.entry, self.env, self.seed, self.timeout)


class BuildenvBuildFailed(Exception):
    """buildenv's own diagnostics, shown without a Python traceback of ours."""


@dataclass(frozen=True)
class BuildPhasesRequest:
    training: str
    env_name: str
    stderr: bytes


@dataclass(frozen=True)
class BuildPhases(EngineAwareReturnType):
    """buildenv's per-phase timings of one build, on a workunit of their own: logged at info
    level ("Completed: buildenv build phases - rec @ prod: built in 61.2 s (check 0.30 s, ...)")
    and attached as metadata for workunit handlers."""

    summary: Optional[BuildSummary]

    def level(self) -> LogLevel:
        return LogLevel.INFO if self.summary is not None else LogLevel.DEBUG

    def message(self) -> Optional[str]:
        return self.summary.line if self.summary is not None else None

    def metadata(self) -> Optional[dict[str, Any]]:
        return self.summary.metadata() if self.summary is not None else None


@rule(desc="buildenv build phases", level=LogLevel.DEBUG)
async def buildenv_build_phases(request: BuildPhasesRequest) -> BuildPhases:
    stderr = request.stderr.decode(errors="replace")
    return BuildPhases(build_summary(stderr, request.training, request.env_name))


@rule(desc="Build an ML model with buildenv", level=LogLevel.DEBUG)
async def package_ml_model(
    package_field_set: MlModelPackageFieldSet, buildenv: Buildenv, build_root: BuildRoot
) -> BuiltPackage:
    field_set = package_field_set.model()
    sandbox = await Get(MlModelSandbox, MlModelFieldSet, field_set)
    if sandbox.problem is not None:
        raise BuildenvBuildFailed(sandbox.problem)

    relpath = f"{field_set.training}/{field_set.env_name}"
    out_dir = f"{OUT}/{relpath}"
    result = await Get(
        FallibleProcessResult,
        BuildenvProcess(
            sandbox,
            argv=(
                "build", field_set.training, "--env", field_set.env_name,
                "--out", out_dir, "--no-register", "--no-cache",
                "--data-root", buildenv.data_root_or(build_root.path),
            ),
            description=f"buildenv build {field_set.training} --env {field_set.env_name}",
            output_directories=(out_dir,),
            remote_cache_speculation_delay_millis=buildenv.remote_cache_speculation_delay,
        ),
    )
    if result.exit_code != 0:
        raise BuildenvBuildFailed(
            f"buildenv build {field_set.training} --env {field_set.env_name} failed "
            f"(exit code {result.exit_code}):\n"
            + (result.stdout.decode() + result.stderr.decode()).rstrip()
        )
    await Get(BuildPhases, BuildPhasesRequest(field_set.training, field_set.env_name,
                                              result.stderr))
    artifact = await Get(Digest, RemovePrefix(result.output_digest, OUT))
    extra_lines: tuple = ()
    if buildenv.register:
        registered = await Get(
            RegisteredModel, RegisterModelRequest(field_set, sandbox, result.output_digest, out_dir)
        )
        extra_lines = registered.log_lines
    return BuiltPackage(artifact, (BuiltPackageArtifact(relpath, extra_lines),))


def rules():
    return [*collect_rules(), UnionRule(PackageFieldSet, MlModelPackageFieldSet)]
