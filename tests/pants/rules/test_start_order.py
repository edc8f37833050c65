"""The models with requirements of their own (torch, XGBoost: the longest builds) ask for a
process slot before the others, which wait for `StartOrder` first."""

from __future__ import annotations

import pytest

pytest.importorskip("pants.testutil", reason="RuleRunner tests: tests/pants/run_rule_tests.sh")

from pants.backend.python.target_types import PythonRequirementTarget, PythonSourceTarget
from pants.backend.python.util_rules.pex import VenvPex, VenvPexProcess
from pants.engine.addresses import Address
from pants.engine.fs import EMPTY_DIGEST
from pants.engine.process import Process
from pants.engine.target import TransitiveTargets
from pants.testutil.rule_runner import MockGet, run_rule_with_mocks
from pants.util.frozendict import FrozenDict
from pants.util.logging import LogLevel

from buildenv_pants.sandbox import (
    BuildenvProcess,
    MlModelSandbox,
    StartOrder,
    StartOrderRequest,
    buildenv_process,
    own_requirements,
)

VENV_PEX = VenvPex(EMPTY_DIGEST, FrozenDict(), "buildenv.pex", None, None,  # type: ignore
                   FrozenDict(), "venv")


def requirement(name: str) -> PythonRequirementTarget:
    return PythonRequirementTarget({"requirements": [name]},
                                   Address("", target_name="reqs", generated_name=name))


def source(path: str) -> PythonSourceTarget:
    return PythonSourceTarget({"source": path.rsplit("/", 1)[-1]},
                              Address(path.rsplit("/", 1)[0], relative_file_path=path))


def test_own_requirements_are_those_the_runtime_lacks() -> None:
    runtime = TransitiveTargets((source("buildenv/cli.py"),),
                                (requirement("pandas"), requirement("numpy")))
    torch_model = TransitiveTargets(
        (source("ex/train_torch.py"),),
        (source("buildenv/cli.py"), requirement("pandas"), requirement("torch"),
         requirement("onnxscript")))
    plain_model = TransitiveTargets((source("ex/train.py"),),
                                    (source("buildenv/cli.py"), requirement("pandas")))
    assert own_requirements(torch_model, runtime) == ("//:reqs#onnxscript", "//:reqs#torch")
    assert own_requirements(plain_model, runtime) == ()


def run_process_rule(sandbox: MlModelSandbox) -> list[str]:
    asked: list[str] = []

    def start_order(request: StartOrderRequest) -> StartOrder:
        asked.append(f"start order of {request.command}")
        return StartOrder()

    def venv_pex_process(request: VenvPexProcess) -> Process:
        asked.append("process")
        return Process(("buildenv.pex",) + request.argv, description=request.description,
                       level=LogLevel.INFO)

    run_rule_with_mocks(
        buildenv_process,
        rule_args=[BuildenvProcess(sandbox, ("build", "rec", "--env", "prod-1"), "build")],
        mock_gets=[
            MockGet(StartOrder, (StartOrderRequest,), start_order),
            MockGet(Process, (VenvPexProcess,), venv_pex_process),
        ],
    )
    return asked


def test_a_model_without_requirements_of_its_own_waits_for_the_start_order() -> None:
    assert run_process_rule(MlModelSandbox(VENV_PEX, EMPTY_DIGEST, (".",))) == [
        "start order of build", "process"]


def test_a_model_with_requirements_of_its_own_asks_at_once() -> None:
    sandbox = MlModelSandbox(VENV_PEX, EMPTY_DIGEST, (".",),
                             own_requirements=("//:reqs#torch",))
    assert run_process_rule(sandbox) == ["process"]


def run_sandbox_rule(closure_extra: tuple) -> list[str]:
    """The Gets `ml_model_sandbox` makes for a model whose closure adds `closure_extra` to the
    runtime's, in order, until its PEX."""
    from pants.backend.python.util_rules.pex_from_targets import PexFromTargetsRequest
    from pants.backend.python.util_rules.python_sources import (
        PythonSourceFiles,
        PythonSourceFilesRequest,
    )
    from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
    from pants.engine.addresses import Addresses, UnparsedAddressInputs
    from pants.engine.fs import CreateDigest, Digest, DigestSubset, MergeDigests, Snapshot
    from pants.engine.target import TransitiveTargetsRequest
    from pants.testutil.option_util import create_subsystem

    from buildenv_pants.config import BuildenvConfig
    from buildenv_pants.sandbox import ml_model_sandbox
    from buildenv_pants.subsystem import Buildenv
    from buildenv_pants.target_types import MlEnvironmentTarget, MlModelFieldSet, MlModelTarget

    asked: list[str] = []
    runtime_address = Address("buildenv", target_name="buildenv")
    env = MlEnvironmentTarget({}, Address("environments", target_name="prod-1"))
    runtime = TransitiveTargets((source("buildenv/cli.py"),), (requirement("pandas"),))
    model = TransitiveTargets((source("src/train.py"),),
                              (env, *runtime.closure, *closure_extra))
    fs = MlModelFieldSet.create(MlModelTarget(
        {"entry": "src/train.py:train", "env": "prod-1"},
        Address("src", target_name="rec", generated_name="prod-1")))

    def transitive(request: TransitiveTargetsRequest) -> TransitiveTargets:
        return runtime if request.roots == (runtime_address,) else model

    def start_order(request: StartOrderRequest) -> StartOrder:
        asked.append(f"start order of {request.command}")
        return StartOrder()

    def venv_pex(_: PexFromTargetsRequest) -> VenvPex:
        asked.append("pex")
        return VENV_PEX

    empty_files = SourceFiles(Snapshot.create_for_testing(["src/train.py"], []), ())
    run_rule_with_mocks(
        ml_model_sandbox,
        rule_args=[fs, create_subsystem(Buildenv, runtime=["buildenv"]),
                   BuildenvConfig.parse("")],
        mock_gets=[
            MockGet(Addresses, (UnparsedAddressInputs,), lambda _: Addresses([runtime_address])),
            MockGet(TransitiveTargets, (TransitiveTargetsRequest,), transitive),
            MockGet(StartOrder, (StartOrderRequest,), start_order),
            MockGet(VenvPex, (PexFromTargetsRequest,), venv_pex),
            MockGet(PythonSourceFiles, (PythonSourceFilesRequest,),
                    lambda _: PythonSourceFiles(empty_files, ("",))),
            MockGet(SourceFiles, (SourceFilesRequest,), lambda _: empty_files),
            MockGet(Digest, (CreateDigest,), lambda _: EMPTY_DIGEST),
            MockGet(Digest, (DigestSubset,), lambda _: EMPTY_DIGEST),
            MockGet(Digest, (MergeDigests,), lambda _: EMPTY_DIGEST),
        ],
    )
    return asked


def test_the_pex_of_a_model_without_requirements_of_its_own_waits_for_the_start_order() -> None:
    assert run_sandbox_rule(()) == ["start order of pex", "pex"]


def test_the_pex_of_a_model_with_requirements_of_its_own_is_asked_for_at_once() -> None:
    assert run_sandbox_rule((requirement("torch"),)) == ["pex"]
