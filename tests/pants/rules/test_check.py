"""`pants check`: one CheckResult per (training, environment), buildenv's text verbatim."""

from __future__ import annotations

import pytest

pytest.importorskip("pants.testutil", reason="RuleRunner tests: tests/pants/run_rule_tests.sh")

from pants.engine.addresses import Address
from pants.engine.fs import EMPTY_DIGEST
from pants.engine.internals.native_engine import ProcessExecutionEnvironment
from pants.engine.platform import Platform
from pants.engine.process import FallibleProcessResult, ProcessResultMetadata
from pants.testutil.rule_runner import MockGet, run_rule_with_mocks
from pants.util.logging import LogLevel

from buildenv_pants.check import BuildenvCheckRequest, ModelCheck, buildenv_check, check_model
from buildenv_pants.sandbox import BuildenvProcess, MlModelSandbox
from buildenv_pants.target_types import MlModelFieldSet, MlModelTarget

LOCAL = ProcessExecutionEnvironment(
    environment_name=None,
    platform=Platform.create_for_localhost().value,
    docker_image=None,
    remote_execution=False,
    remote_execution_extra_platform_properties=[],
)

DIAGNOSTIC = (
    "src/train.py:7:5: error[BE102]: column 'critic_scores' is not in dataset 'movies' "
    "of environment prod-2\n  hint: did you mean 'critic_score'?\n"
)


def field_set(env: str) -> MlModelFieldSet:
    target = MlModelTarget(
        {"entry": "src/train.py:train", "env": env},
        Address("src", target_name="rec", generated_name=env),
    )
    return MlModelFieldSet.create(target)


def fake_sandbox(fs: MlModelFieldSet) -> MlModelSandbox:
    if fs.env_name == "orphan":
        return MlModelSandbox(None, EMPTY_DIGEST, (), problem="src:rec#orphan: no target")
    return MlModelSandbox(None, EMPTY_DIGEST, (".",))


def fake_process(process: BuildenvProcess) -> FallibleProcessResult:
    assert process.argv[0] == "check" and process.argv[-2:] == ("--format", "text")
    env = process.argv[process.argv.index("--env") + 1]
    failed = env == "prod-2"
    return FallibleProcessResult(
        stdout=b"" if failed else f"rec @ {env}: static checks passed\n".encode(),
        stdout_digest=EMPTY_DIGEST,
        stderr=DIAGNOSTIC.encode() if failed else b"",
        stderr_digest=EMPTY_DIGEST,
        exit_code=1 if failed else 0,
        output_digest=EMPTY_DIGEST,
        metadata=ProcessResultMetadata(0, LOCAL, "ran_locally", 0),
    )


def check_one(fs: MlModelFieldSet) -> ModelCheck:
    return run_rule_with_mocks(
        check_model,
        rule_args=[fs],
        mock_gets=[
            MockGet(MlModelSandbox, (MlModelFieldSet,), fake_sandbox),
            MockGet(FallibleProcessResult, (BuildenvProcess,), fake_process),
        ],
    )


def run(*envs: str):
    # Each pair's check is a rule of its own (its process starts once its own sandbox is
    # ready): the goal's rule asks for nothing else.
    return run_rule_with_mocks(
        buildenv_check,
        rule_args=[BuildenvCheckRequest([field_set(e) for e in envs])],
        mock_gets=[MockGet(ModelCheck, (MlModelFieldSet,), check_one)],
    )


def test_diagnostics_fail_the_check_verbatim() -> None:
    results = run("prod-2", "prod-1")
    assert results.checker_name == "buildenv"
    assert results.exit_code == 1
    assert results.level() == LogLevel.ERROR
    # Sorted by address; the diagnostic is shown as buildenv wrote it.
    assert [r.partition_description for r in results.results] == ["rec @ prod-1", "rec @ prod-2"]
    assert [r.exit_code for r in results.results] == [0, 1]
    assert results.results[1].stderr == DIAGNOSTIC
    assert DIAGNOSTIC.rstrip() in (results.message() or "")


def test_all_clean() -> None:
    results = run("prod-1")
    assert results.exit_code == 0
    assert results.results[0].stdout == "rec @ prod-1: static checks passed\n"


def test_sandbox_problem_is_a_config_error_without_running() -> None:
    results = run("orphan")
    assert results.exit_code == 2
    assert results.results[0].stderr == "src:rec#orphan: no target"
