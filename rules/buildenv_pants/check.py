"""`pants check`: buildenv's static checks of every (training, environment) pair.

Each pair's check starts as soon as its own sandbox is ready, not once every pair's is: the
pairs share few runtime PEXes (one common, one per set of requirements of their own), and the
first process of a PEX pays for its venv (seconds: its wheels unpacked). So the common pairs'
checks, and that venv, run while the PEXes of torch or XGBoost are still being built.
"""

from __future__ import annotations

from dataclasses import dataclass

from pants.core.goals.check import CheckRequest, CheckResult, CheckResults
from pants.engine.process import FallibleProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel

from buildenv_pants.sandbox import BuildenvProcess, MlModelSandbox
from buildenv_pants.target_types import MlModelFieldSet

# Exit 2 = configuration error (buildenv's contract): also a failed check.
CONFIG_ERROR = 2


class BuildenvCheckRequest(CheckRequest):
    field_set_type = MlModelFieldSet
    tool_name = "buildenv"


@dataclass(frozen=True)
class ModelCheck:
    """One pair's `CheckResult`."""

    result: CheckResult


@rule(desc="Check an ML training against its environment", level=LogLevel.DEBUG)
async def check_model(fs: MlModelFieldSet) -> ModelCheck:
    sandbox = await Get(MlModelSandbox, MlModelFieldSet, fs)
    description = f"{fs.training} @ {fs.env_name}"
    if sandbox.problem is not None:
        return ModelCheck(CheckResult(CONFIG_ERROR, "", sandbox.problem, description))
    result = await Get(
        FallibleProcessResult,
        BuildenvProcess(
            sandbox,
            argv=("check", fs.training, "--env", fs.env_name, "--format", "text"),
            description=f"buildenv check {fs.training} --env {fs.env_name}",
        ),
    )
    return ModelCheck(CheckResult(
        result.exit_code,
        result.stdout.decode(),
        result.stderr.decode(),
        partition_description=description,
    ))


@rule(desc="Check ML trainings against their environments", level=LogLevel.DEBUG)
async def buildenv_check(request: BuildenvCheckRequest) -> CheckResults:
    field_sets = sorted(request.field_sets, key=lambda fs: fs.address)
    checks = await MultiGet(Get(ModelCheck, MlModelFieldSet, fs) for fs in field_sets)
    return CheckResults([c.result for c in checks], checker_name="buildenv")


def rules():
    return [*collect_rules(), UnionRule(CheckRequest, BuildenvCheckRequest)]
