"""Inferred dependencies.

* `ml_model` -> the `python_source` owning its `entry` file, and the `ml_environment`
  of its environment.
* `ml_environment` -> the `ml_environment` its `extends:` names, and the `python_source`s
  owning the code that makes its data: each derived dataset's `source.transform` module and
  each label set's `source.functions` module (docs/derived.md). Pants infers what those
  import, so editing a shared helper invalidates every model built on that data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import yaml
from pants.backend.python.target_types import PythonSourceField
from pants.base.specs import DirLiteralSpec, RawSpecs
from pants.engine.addresses import Address, Addresses
from pants.engine.fs import DigestContents, GlobMatchErrorBehavior, PathGlobs
from pants.engine.internals.graph import Owners, OwnersRequest
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import (
    FieldSet,
    InferDependenciesRequest,
    InferredDependencies,
    Targets,
)
from pants.engine.unions import UnionRule
from pants.util.frozendict import FrozenDict
from pants.util.logging import LogLevel

from buildenv_pants.config import BuildenvConfig
from buildenv_pants.target_types import (
    MlEntryField,
    MlEnvField,
    MlEnvironmentSourcesField,
)


class EnvironmentTargets(FrozenDict[str, Address]):
    """Environment name -> its `ml_environment` target, in the environments directory."""


@rule(desc="Find `ml_environment` targets", level=LogLevel.DEBUG)
async def environment_targets(config: BuildenvConfig) -> EnvironmentTargets:
    targets = await Get(
        Targets,
        RawSpecs(
            dir_literals=(DirLiteralSpec(config.environments_dir),),
            unmatched_glob_behavior=GlobMatchErrorBehavior.ignore,
            description_of_origin="the buildenv plugin (environments directory)",
        ),
    )
    return EnvironmentTargets(
        {
            tgt[MlEnvironmentSourcesField].env_name: tgt.address
            for tgt in targets
            if tgt.has_field(MlEnvironmentSourcesField)
        }
    )


@dataclass(frozen=True)
class MlModelDependenciesFieldSet(FieldSet):
    required_fields = (MlEntryField, MlEnvField)

    entry: MlEntryField
    env: MlEnvField


class InferMlModelDependencies(InferDependenciesRequest):
    infer_from = MlModelDependenciesFieldSet


@rule(desc="Infer `ml_model` dependencies", level=LogLevel.DEBUG)
async def infer_ml_model_dependencies(
    request: InferMlModelDependencies, environments: EnvironmentTargets
) -> InferredDependencies:
    owners = await Get(Owners, OwnersRequest((request.field_set.entry.module_path,)))
    owner_targets = await Get(Targets, Addresses(owners))
    python_owners = [t.address for t in owner_targets if t.has_field(PythonSourceField)]
    env_address: Optional[Address] = environments.get(request.field_set.env.value or "")
    # A missing environment target is reported by `check`/`package`, with a hint.
    return InferredDependencies([*python_owners, *([env_address] if env_address else [])])


@dataclass(frozen=True)
class MlEnvironmentDependenciesFieldSet(FieldSet):
    required_fields = (MlEnvironmentSourcesField,)

    sources: MlEnvironmentSourcesField


class InferMlEnvironmentDependencies(InferDependenciesRequest):
    infer_from = MlEnvironmentDependenciesFieldSet


def _document(yaml_text: bytes) -> dict:
    try:
        doc = yaml.safe_load(yaml_text)
    except yaml.YAMLError:
        return {}  # buildenv reports the syntax error with its position
    return doc if isinstance(doc, dict) else {}


def parent_name(yaml_text: bytes) -> Optional[str]:
    """The `extends:` of an environment file; None when absent or unparsable."""
    parent = _document(yaml_text).get("extends")
    return parent if isinstance(parent, str) else None


def source_modules(yaml_text: bytes) -> tuple[str, ...]:
    """The modules of code-made data an environment file declares (root-relative paths):
    derived datasets' `source.transform` (`module.py:function`) and label sets'
    `source.functions`. Lenient: buildenv itself reports malformed entries."""
    doc = _document(yaml_text)
    found = []
    for section, key in (("datasets", "transform"), ("labels", "functions")):
        entries = doc.get(section)
        for entry in entries.values() if isinstance(entries, dict) else ():
            source = entry.get("source") if isinstance(entry, dict) else None
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, str) and value.strip():
                found.append(value.rsplit(":", 1)[0] if key == "transform" else value)
    return tuple(sorted(set(found)))


@rule(desc="Infer `ml_environment` parents", level=LogLevel.DEBUG)
async def infer_ml_environment_dependencies(
    request: InferMlEnvironmentDependencies, environments: EnvironmentTargets
) -> InferredDependencies:
    contents = await Get(
        DigestContents, PathGlobs([request.field_set.sources.yaml_path])
    )
    text = contents[0].content if contents else b""
    parent = parent_name(text) if contents else None
    address = environments.get(parent) if parent else None
    modules = source_modules(text)
    python_owners = []
    if modules:  # a module nothing owns is reported by buildenv (BE091, BE875)
        owners = await Get(Owners, OwnersRequest(modules))
        owner_targets = await Get(Targets, Addresses(owners))
        python_owners = [t.address for t in owner_targets if t.has_field(PythonSourceField)]
    return InferredDependencies([*([address] if address else []), *python_owners])


def rules():
    return [
        *collect_rules(),
        UnionRule(InferDependenciesRequest, InferMlModelDependencies),
        UnionRule(InferDependenciesRequest, InferMlEnvironmentDependencies),
    ]
