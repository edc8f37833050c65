"""The sandbox every `python -m buildenv` process of an `ml_model` runs in.

Inputs, all by digest (they make up the process cache key):
* a venv PEX of the third-party requirements of the model's code and of buildenv;
* the first-party sources (the training's code, buildenv itself when first-party);
* the environment file, its lock, and the files of the environments it extends
  (their YAML only: a parent's lock is not read when building a child);
* a synthesized `pyproject.toml` declaring just this training, so that editing other
  trainings or unrelated project metadata does not invalidate the model.

The longest processes start first. Pants 2.17 runs at most
`[GLOBAL].process_execution_local_parallelism` processes at once and starts the waiting ones in
the order they asked (a FIFO semaphore); which of a goal's processes asks first is up to the
engine's scheduling. A model that needs requirements of its own beyond `[buildenv].runtime`
(torch, XGBoost: a PEX, a venv and imports of its own) builds in about twice the time of the
others; started last, it ran alone while the other cores idled. So the other models' processes
ask only after a trivial one (`StartOrder`) has run: by then the long ones hold their slots or
their places in the queue. The same holds for the runtime PEXes (the first process of each
then makes its venv: torch's is the longest). One `StartOrder` per kind of process (`pex`, then
each buildenv command: `check`, `build`, ...): in `pants build ::` (`check package`) the builds
would otherwise find the checks' one already done.

Datasets are *not* inputs: they are read from the absolute data root, and buildenv
refuses to build when their bytes differ from the digests in the lock, which is an
input. So the key stays truthful without copying data into sandboxes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import toml
from pants.backend.python.target_types import EntryPoint, PythonRequirementsField
from pants.backend.python.util_rules.pex import VenvPex, VenvPexProcess
from pants.backend.python.util_rules.pex_from_targets import PexFromTargetsRequest
from pants.backend.python.util_rules.python_sources import (
    PythonSourceFiles,
    PythonSourceFilesRequest,
)
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.core.util_rules.system_binaries import BashBinary
from pants.engine.addresses import Addresses, UnparsedAddressInputs
from pants.engine.fs import (
    EMPTY_DIGEST,
    CreateDigest,
    Digest,
    DigestSubset,
    FileContent,
    MergeDigests,
    PathGlobs,
)
from pants.engine.process import Process, ProcessCacheScope, ProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import TransitiveTargets, TransitiveTargetsRequest
from pants.util.logging import LogLevel

from buildenv_pants.config import BuildenvConfig
from buildenv_pants.subsystem import Buildenv
from buildenv_pants.target_types import MlEnvironmentSourcesField, MlModelFieldSet

BUILDENV_MAIN = "buildenv.cli:main"


@dataclass(frozen=True)
class MlModelSandbox:
    """Everything but argv. `problem` is a user-facing error found while preparing it.
    `own_requirements`: the third-party requirements the model needs beyond `[buildenv].runtime`
    (torch, XGBoost, ...): a PEX, a venv and imports of its own, the longest builds."""

    venv_pex: Optional[VenvPex]
    digest: Digest
    source_roots: tuple[str, ...]
    problem: Optional[str] = None
    own_requirements: tuple[str, ...] = ()


def synthesized_pyproject(config: BuildenvConfig, field_set: MlModelFieldSet) -> str:
    training = {
        "entry": field_set.entry.value,
        "environments": [field_set.env_name],
    }
    if field_set.seed.value is not None:
        training["seed"] = field_set.seed.value
    if field_set.timeout.value is not None:
        training["timeout"] = field_set.timeout.value
    # `threads` is part of buildenv's cache key (it can change a model's last bits): without
    # it the sandbox would build with 1 thread what the CLI builds with N.
    decl = next((t for t in config.trainings if t.name == field_set.training), None)
    if decl is not None and decl.threads is not None:
        training["threads"] = decl.threads
    # `precheck = false` says running the training twice has side effects: keep it.
    if decl is not None and decl.precheck is not None:
        training["precheck"] = decl.precheck
    # The sandbox policy is part of the cache key and decides what the training may reach.
    if decl is not None and decl.sandbox is not None:
        training["sandbox"] = json.loads(decl.sandbox)
    # The training's resolve is this sandbox's PEX: the training runs in the interpreter
    # running buildenv, not in an environment buildenv resolves.
    tool = {"environments_dir": config.environments_dir or ".",
            "toolchains": {"mode": "interpreter"},
            "trainings": {field_set.training: training}}
    if config.sandbox is not None:
        tool["sandbox"] = config.sandbox
    doc = {"tool": {"buildenv": tool}}
    return "# Synthesized by the buildenv Pants plugin for one model.\n" + toml.dumps(doc)


@dataclass(frozen=True)
class StartOrderRequest:
    command: str  # `pex`, or the buildenv command of the processes that wait for it


@dataclass(frozen=True)
class StartOrder:
    """Reached once the models with requirements of their own have asked for their process
    slots (the module's docstring)."""


@rule(desc="Let the longest buildenv processes start first", level=LogLevel.DEBUG)
async def start_order(request: StartOrderRequest, bash: BashBinary) -> StartOrder:
    # Never from the disk cache (a hit would not wait for anything), but memoized by pantsd:
    # it runs in a cold build (a fresh pantsd, or any `--no-pantsd` run), where the order
    # matters, while a no-op `build ::` with a warm pantsd starts no process for it (a
    # per-session process would cost three in every run). The kind in its argv makes it a
    # process of its own per kind.
    await Get(ProcessResult, Process(
        (bash.path, "-c", ":", request.command),
        description=f"let the longest ML models' `{request.command}` processes start first",
        level=LogLevel.DEBUG,
        cache_scope=ProcessCacheScope.PER_RESTART_SUCCESSFUL,
    ))
    return StartOrder()


@rule(desc="Prepare a buildenv sandbox", level=LogLevel.DEBUG)
async def ml_model_sandbox(
    field_set: MlModelFieldSet, buildenv: Buildenv, config: BuildenvConfig
) -> MlModelSandbox:
    runtime = await Get(Addresses, UnparsedAddressInputs, buildenv.runtime)
    roots = (field_set.address, *runtime)
    transitive, runtime_closure = await MultiGet(
        Get(TransitiveTargets, TransitiveTargetsRequest(roots)),
        Get(TransitiveTargets, TransitiveTargetsRequest(runtime)),
    )

    env_targets = [t for t in transitive.closure if t.has_field(MlEnvironmentSourcesField)]
    own = [t for t in env_targets if t[MlEnvironmentSourcesField].env_name == field_set.env_name]
    if not own:
        return MlModelSandbox(
            None,
            EMPTY_DIGEST,
            (),
            problem=(
                f"{field_set.address}: no `ml_environment` target for environment "
                f"{field_set.env_name!r} in {config.environments_dir or '.'}/\n"
                f"  hint: run `pants tailor ::` to add one"
            ),
        )
    own_sources = own[0][MlEnvironmentSourcesField]
    wanted = [own_sources.yaml_path, *(
        f"{own_sources.address.spec_path}/{g}".lstrip("/")
        for g in own_sources.globs if not g.endswith(".yaml")
    )]
    wanted += [
        t[MlEnvironmentSourcesField].yaml_path for t in env_targets if t not in own
    ]

    extra = own_requirements(transitive, runtime_closure)
    if not extra:  # the PEXes of the models with requirements of their own are built first
        await Get(StartOrder, StartOrderRequest("pex"))
    pex_request = PexFromTargetsRequest(
        roots,
        output_filename="buildenv.pex",
        internal_only=True,
        include_source_files=False,
        main=EntryPoint.parse(BUILDENV_MAIN),
        description="Build the buildenv runtime PEX",
    )
    venv_pex, python_sources, env_sources, pyproject = await MultiGet(
        Get(VenvPex, PexFromTargetsRequest, pex_request),
        Get(
            PythonSourceFiles,
            PythonSourceFilesRequest(transitive.closure, include_files=True, include_resources=True),
        ),
        Get(SourceFiles, SourceFilesRequest([t[MlEnvironmentSourcesField] for t in env_targets])),
        Get(
            Digest,
            CreateDigest(
                [FileContent("pyproject.toml", synthesized_pyproject(config, field_set).encode())]
            ),
        ),
    )
    env_files = await Get(
        Digest, DigestSubset(env_sources.snapshot.digest, PathGlobs(wanted))
    )
    digest = await Get(
        Digest,
        MergeDigests([python_sources.source_files.snapshot.digest, env_files, pyproject]),
    )
    entry_file = field_set.entry.module_path
    if entry_file not in python_sources.source_files.snapshot.files:
        return MlModelSandbox(
            None,
            digest,
            (),
            problem=(
                f"{field_set.address}: the entry file {entry_file} is not owned by a "
                f"`python_source(s)` target\n  hint: run `pants tailor ::`"
            ),
        )
    return MlModelSandbox(venv_pex, digest, python_sources.source_roots,
                          own_requirements=extra)


def own_requirements(model: TransitiveTargets, runtime: TransitiveTargets) -> tuple[str, ...]:
    """The requirement targets in the model's closure that the runtime's closure lacks."""
    shared = {t.address for t in runtime.closure if t.has_field(PythonRequirementsField)}
    return tuple(sorted(
        str(t.address) for t in model.closure
        if t.has_field(PythonRequirementsField) and t.address not in shared
    ))


@dataclass(frozen=True)
class BuildenvProcess:
    """`python -m buildenv <argv>` in the sandbox of `field_set`."""

    sandbox: MlModelSandbox
    argv: tuple[str, ...]
    description: str
    output_directories: tuple[str, ...] = ()
    extra_env: Optional[Mapping[str, str]] = None
    cache_scope: ProcessCacheScope = ProcessCacheScope.SUCCESSFUL
    remote_cache_speculation_delay_millis: int = 0


@rule(level=LogLevel.DEBUG)
async def buildenv_process(request: BuildenvProcess) -> Process:
    sandbox = request.sandbox
    assert sandbox.venv_pex is not None, sandbox.problem
    if not sandbox.own_requirements:
        await Get(StartOrder, StartOrderRequest(request.argv[0]))
    process = await Get(
        Process,
        VenvPexProcess(
            sandbox.venv_pex,
            argv=request.argv,
            description=request.description,
            level=LogLevel.INFO,
            input_digest=sandbox.digest,
            extra_env={
                "PEX_EXTRA_SYS_PATH": ":".join(sandbox.source_roots),
                **(request.extra_env or {}),
            },
            output_directories=request.output_directories,
            cache_scope=request.cache_scope,
        ),
    )
    if request.remote_cache_speculation_delay_millis:
        process = dataclasses.replace(
            process,
            remote_cache_speculation_delay_millis=request.remote_cache_speculation_delay_millis,
        )
    return process


def rules():
    return collect_rules()
