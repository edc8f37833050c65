"""`ml_training` -> `ml_model` per matching environment; inferred dependencies."""

from __future__ import annotations

import pytest

pytest.importorskip("pants.testutil", reason="RuleRunner tests: tests/pants/run_rule_tests.sh")

from pants.backend.python.target_types import PythonSourcesGeneratorTarget
from pants.backend.python.target_types_rules import rules as python_target_types_rules
from pants.engine.addresses import Address, Addresses
from pants.engine.internals.scheduler import ExecutionError
from pants.engine.rules import QueryRule
from pants.engine.target import Dependencies, DependenciesRequest
from pants.testutil.rule_runner import RuleRunner

from buildenv_pants import config, generate, infer, sources
from buildenv_pants.target_types import (
    MlEntryField,
    MlEnvField,
    MlEnvironmentSourcesField,
    MlEnvironmentTarget,
    MlModelTarget,
    MlSeedField,
    MlTrainingTarget,
)

ENVS = {
    "environments/prod-1.yaml": "name: prod-1\n",
    "environments/prod-2.yaml": "name: prod-2\nextends: prod-1\n",
    "environments/exp-x.yaml": "name: exp-x\nextends: prod-2\n",
    "environments/BUILD": "\n".join(
        f'ml_environment(name="{n}")' for n in ("prod-1", "prod-2", "exp-x")
    ),
}


@pytest.fixture
def rule_runner() -> RuleRunner:
    return RuleRunner(
        rules=[
            *config.rules(),
            *generate.rules(),
            *infer.rules(),
            *sources.rules(),
            *python_target_types_rules(),
            QueryRule(Addresses, [DependenciesRequest]),
        ],
        target_types=[
            MlEnvironmentTarget,
            MlTrainingTarget,
            MlModelTarget,
            PythonSourcesGeneratorTarget,
        ],
    )


def test_one_model_per_matching_environment(rule_runner: RuleRunner) -> None:
    rule_runner.write_files({
        **ENVS,
        "src/train.py": "def train(ctx): ...\n",
        "src/BUILD": 'ml_training(name="rec", entry="src/train.py:train", '
                     'environments=["prod-*"], seed=3)\n',
    })
    model = rule_runner.get_target(Address("src", target_name="rec", generated_name="prod-2"))
    assert isinstance(model, MlModelTarget)
    assert model[MlEnvField].value == "prod-2"
    assert model[MlEntryField].value == "src/train.py:train"
    assert model[MlSeedField].value == 3
    with pytest.raises(ExecutionError):
        rule_runner.get_target(Address("src", target_name="rec", generated_name="exp-x"))


def test_unset_fields_come_from_pyproject(rule_runner: RuleRunner) -> None:
    rule_runner.write_files({
        **ENVS,
        "pyproject.toml": '[tool.buildenv.trainings.rec]\n'
                          'entry = "src/train.py:train"\n'
                          'environments = ["exp-*"]\n'
                          'seed = 7\n',
        "src/BUILD": 'ml_training(name="rec")\nml_training(name="other", entry="src/o.py:f")\n',
    })
    model = rule_runner.get_target(Address("src", target_name="rec", generated_name="exp-x"))
    assert model[MlEntryField].value == "src/train.py:train"
    assert model[MlSeedField].value == 7
    # Not declared in pyproject.toml: every environment, buildenv's default seed.
    other = rule_runner.get_target(Address("src", target_name="other", generated_name="prod-1"))
    assert other[MlSeedField].value is None


def test_entry_is_required_without_pyproject(rule_runner: RuleRunner) -> None:
    rule_runner.write_files({**ENVS, "src/BUILD": 'ml_training(name="rec")\n'})
    with pytest.raises(ExecutionError) as exc:
        rule_runner.get_target(Address("src", target_name="rec", generated_name="prod-1"))
    assert (
        "The 'entry' field in target src:rec must be set, but it is not, and pyproject.toml "
        "has no [tool.buildenv.trainings.rec] to take it from."
    ) in str(exc.value)


def test_no_matching_environment_is_a_field_error(rule_runner: RuleRunner) -> None:
    rule_runner.write_files({
        **ENVS,
        "src/BUILD": 'ml_training(name="rec", entry="src/train.py:train", '
                     'environments=["staging-*"])\n',
    })
    with pytest.raises(ExecutionError) as exc:
        rule_runner.get_target(Address("src", target_name="rec", generated_name="prod-1"))
    assert (
        "The 'environments' field in target src:rec must match at least one environment in "
        "environments/, but ['staging-*'] matched none of: exp-x, prod-1, prod-2."
    ) in str(exc.value)


def test_bad_entry_is_a_field_error(rule_runner: RuleRunner) -> None:
    rule_runner.write_files({**ENVS, "src/BUILD": 'ml_training(name="rec", entry="src/train")\n'})
    with pytest.raises(ExecutionError) as exc:
        rule_runner.get_target(Address("src", target_name="rec"))
    assert "must look like `path/to/module.py:function`, but it was set to 'src/train'" in str(
        exc.value
    )


def test_environment_dependencies(rule_runner: RuleRunner) -> None:
    rule_runner.write_files({
        **ENVS,
        "src/train.py": "def train(ctx): ...\n",
        "src/BUILD": 'python_sources()\n'
                     'ml_training(name="rec", entry="src/train.py:train")\n',
    })

    def deps(address: Address) -> set[str]:
        tgt = rule_runner.get_target(address)
        result = rule_runner.request(Addresses, [DependenciesRequest(tgt[Dependencies])])
        return {a.spec for a in result}

    # ml_model -> its environment and the owner of its entry file.
    assert deps(Address("src", target_name="rec", generated_name="exp-x")) == {
        "environments:exp-x",
        "src/train.py",
    }
    # ml_environment -> the environment it extends.
    assert deps(Address("environments", target_name="exp-x")) == {"environments:prod-2"}
    assert deps(Address("environments", target_name="prod-1")) == set()


def test_environment_depends_on_the_code_that_makes_its_data(rule_runner: RuleRunner) -> None:
    rule_runner.write_files({
        **ENVS,
        "environments/prod-2.yaml": (
            "name: prod-2\nextends: prod-1\ndatasets:\n  daily:\n    source:\n"
            "      transform: transforms/daily.py:daily\n      inputs: [events]\n"
            "labels:\n  rules:\n    dataset: events\n    source: {functions: rules/sign.py}\n"
        ),
        "transforms/daily.py": "from transforms.shared import load\n\n\ndef daily(ctx): ...\n",
        "transforms/shared.py": "def load(ctx): ...\n",
        "transforms/BUILD": "python_sources()\n",
        "rules/sign.py": "import buildenv\n",
        "rules/BUILD": "python_sources()\n",
    })

    def deps(address: Address) -> set[str]:
        tgt = rule_runner.get_target(address)
        result = rule_runner.request(Addresses, [DependenciesRequest(tgt[Dependencies])])
        return {a.spec for a in result}

    # the transform's and the labeling functions' modules (Pants follows their imports)
    assert deps(Address("environments", target_name="prod-2")) == {
        "environments:prod-1", "transforms/daily.py", "rules/sign.py",
    }
    # a child inherits them through its parent
    assert deps(Address("environments", target_name="exp-x")) == {"environments:prod-2"}


def test_source_modules_are_read_leniently() -> None:
    assert infer.source_modules(b"datasets:\n  d:\n    source: {transform: a/b.py:f}\n"
                                b"  e:\n    uri: x.parquet\n"
                                b"labels:\n  l: {source: {functions: c.py}}\n") == (
        "a/b.py", "c.py")
    assert infer.source_modules(b"datasets: [1, 2]\nlabels: {l: 3}\n") == ()
    assert infer.source_modules(b": : not yaml [") == ()


def test_environment_sources_default_to_its_name(rule_runner: RuleRunner) -> None:
    rule_runner.write_files(ENVS)
    env = rule_runner.get_target(Address("environments", target_name="prod-2"))
    assert env[MlEnvironmentSourcesField].value == ("prod-2.yaml", "prod-2.lock.json")
