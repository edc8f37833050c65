"""`pants check`: buildenv's static checks of every (training, environment) pair."""

from __future__ import annotations

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


@rule(desc="Check ML trainings against their environments", level=LogLevel.DEBUG)
async def buildenv_check(request: BuildenvCheckRequest) -> CheckResults:
    field_sets = sorted(request.field_sets, key=lambda fs: fs.address)
    sandboxes = await MultiGet(Get(MlModelSandbox, MlModelFieldSet, fs) for fs in field_sets)
    runnable = [(fs, sb) for fs, sb in zip(field_sets, sandboxes) if sb.problem is None]
    results = await MultiGet(
        Get(
            FallibleProcessResult,
            BuildenvProcess(
                sandbox,
                argv=("check", fs.training, "--env", fs.env_name, "--format", "text"),
                description=f"buildenv check {fs.training} --env {fs.env_name}",
            ),
        )
        for fs, sandbox in runnable
    )
    by_address = {fs.address: result for (fs, _), result in zip(runnable, results)}

    check_results = []
    for fs, sandbox in zip(field_sets, sandboxes):
        description = f"{fs.training} @ {fs.env_name}"
        if sandbox.problem is not None:
            check_results.append(CheckResult(CONFIG_ERROR, "", sandbox.problem, description))
            continue
        result = by_address[fs.address]
        check_results.append(
            CheckResult(
                result.exit_code,
                result.stdout.decode(),
                result.stderr.decode(),
                partition_description=description,
            )
        )
    return CheckResults(check_results, checker_name="buildenv")


def rules():
    return [*collect_rules(), UnionRule(CheckRequest, BuildenvCheckRequest)]
