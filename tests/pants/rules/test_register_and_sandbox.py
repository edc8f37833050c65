"""`--buildenv-register` and the synthesized pyproject of a model's sandbox."""

from __future__ import annotations

import pytest

pytest.importorskip("pants.testutil", reason="RuleRunner tests: tests/pants/run_rule_tests.sh")

import toml
from pants.engine.addresses import Address
from pants.engine.fs import EMPTY_DIGEST, Digest, MergeDigests
from pants.engine.internals.native_engine import ProcessExecutionEnvironment
from pants.engine.platform import Platform
from pants.engine.process import ProcessResult, ProcessResultMetadata
from pants.testutil.rule_runner import MockGet, run_rule_with_mocks

from buildenv_pants.config import BuildenvConfig
from buildenv_pants.register_model import (
    RegisteredModel,
    RegisterModelRequest,
    TrackingUri,
    register_model,
)
from buildenv_pants.sandbox import (
    BuildenvProcess,
    MlModelSandbox,
    synthesized_pyproject,
)
from buildenv_pants.target_types import MlModelFieldSet, MlModelTarget

LOCAL = ProcessExecutionEnvironment(
    environment_name=None,
    platform=Platform.create_for_localhost().value,
    docker_image=None,
    remote_execution=False,
    remote_execution_extra_platform_properties=[],
)

PYPROJECT = """
[tool.buildenv.trainings.rec]
entry = "src/train.py:train"
environments = ["prod-*"]
seed = 7
threads = 4
"""


def field_set(env: str = "prod-1") -> MlModelFieldSet:
    target = MlModelTarget(
        {"entry": "src/train.py:train", "env": env, "seed": 7},
        Address("src", target_name="rec", generated_name=env),
    )
    return MlModelFieldSet.create(target)


def test_register_runs_the_register_command_with_a_hashable_request() -> None:
    seen = []

    def fake_process(process: BuildenvProcess) -> ProcessResult:
        hash(process)  # the engine memoizes requests: a dict field made this a TypeError
        seen.append(process)
        return ProcessResult(
            stdout=b"rec @ prod-1: registered rec v3\n",
            stdout_digest=EMPTY_DIGEST,
            stderr=b"",
            stderr_digest=EMPTY_DIGEST,
            output_digest=EMPTY_DIGEST,
            metadata=ProcessResultMetadata(0, LOCAL, "ran_locally", 0),
        )

    fs = field_set()
    sandbox = MlModelSandbox(None, EMPTY_DIGEST, (".",))
    result = run_rule_with_mocks(
        register_model,
        rule_args=[RegisterModelRequest(fs, sandbox, EMPTY_DIGEST, "__out/rec/prod-1"),
                   TrackingUri("sqlite:////repo/.buildenv/mlflow.db")],
        mock_gets=[
            MockGet(Digest, (MergeDigests,), lambda _: EMPTY_DIGEST),
            MockGet(ProcessResult, (BuildenvProcess,), fake_process),
        ],
    )
    assert result == RegisteredModel(("rec @ prod-1: registered rec v3",))
    [process] = seen
    # `buildenv register DIR --training T --env E` is a real command of the CLI
    assert process.argv == ("register", "__out/rec/prod-1", "--training", "rec", "--env",
                            "prod-1")
    assert dict(process.extra_env) == {
        "BUILDENV_TRACKING_URI": "sqlite:////repo/.buildenv/mlflow.db"}


def test_sandbox_pyproject_keeps_the_trainings_threads() -> None:
    config = BuildenvConfig.parse(PYPROJECT)
    assert config.trainings[0].threads == 4
    doc = toml.loads(synthesized_pyproject(config, field_set()))
    training = doc["tool"]["buildenv"]["trainings"]["rec"]
    assert training == {"entry": "src/train.py:train", "environments": ["prod-1"], "seed": 7,
                        "threads": 4}


def test_sandbox_pyproject_without_threads_uses_buildenvs_default() -> None:
    config = BuildenvConfig.parse(PYPROJECT.replace("threads = 4\n", ""))
    doc = toml.loads(synthesized_pyproject(config, field_set()))
    assert "threads" not in doc["tool"]["buildenv"]["trainings"]["rec"]


def test_sandbox_trainings_run_in_the_sandbox_interpreter() -> None:
    """Under Pants the training's resolve is the sandbox's PEX: buildenv must not resolve an
    environment of its own there (tests/test_toolchains.py covers that mode's builds)."""
    doc = toml.loads(synthesized_pyproject(BuildenvConfig.parse(PYPROJECT), field_set()))
    assert doc["tool"]["buildenv"]["toolchains"] == {"mode": "interpreter"}


def test_sandbox_pyproject_keeps_precheck_false() -> None:
    config = BuildenvConfig.parse(PYPROJECT + "precheck = false\n")
    assert config.trainings[0].precheck is False
    doc = toml.loads(synthesized_pyproject(config, field_set()))
    assert doc["tool"]["buildenv"]["trainings"]["rec"]["precheck"] is False
    doc = toml.loads(synthesized_pyproject(BuildenvConfig.parse(PYPROJECT), field_set()))
    assert "precheck" not in doc["tool"]["buildenv"]["trainings"]["rec"]


def test_sandbox_pyproject_keeps_the_sandbox_policy() -> None:
    text = ('[tool.buildenv]\nsandbox = "required"\n' + PYPROJECT
            + '[tool.buildenv.trainings.rec.sandbox]\nread_only = ["/opt/models"]\n')
    config = BuildenvConfig.parse(text)
    doc = toml.loads(synthesized_pyproject(config, field_set()))
    assert doc["tool"]["buildenv"]["sandbox"] == "required"
    assert doc["tool"]["buildenv"]["trainings"]["rec"]["sandbox"] == {
        "read_only": ["/opt/models"]}
    plain = toml.loads(synthesized_pyproject(BuildenvConfig.parse(PYPROJECT), field_set()))
    assert "sandbox" not in plain["tool"]["buildenv"]
    assert "sandbox" not in plain["tool"]["buildenv"]["trainings"]["rec"]
