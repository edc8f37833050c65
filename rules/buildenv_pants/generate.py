"""`ml_training` generates one `ml_model` per environment its `environments` globs match."""

from __future__ import annotations

import fnmatch
import os

from pants.engine.fs import PathGlobs, Paths
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import GeneratedTargets, GenerateTargetsRequest, InvalidFieldException
from pants.engine.unions import UnionMembership, UnionRule
from pants.util.logging import LogLevel

from buildenv_pants.config import BuildenvConfig
from buildenv_pants.target_types import (
    MlEntryField,
    MlEnvField,
    MlEnvironmentsField,
    MlModelTarget,
    MlSeedField,
    MlTimeoutField,
    MlTrainingTarget,
)

ENV_SUFFIX = ".yaml"


class GenerateMlModelsRequest(GenerateTargetsRequest):
    generate_from = MlTrainingTarget


def environment_names(env_files: tuple[str, ...] | list[str]) -> list[str]:
    return sorted(os.path.basename(f)[: -len(ENV_SUFFIX)] for f in env_files)


def match_environments(patterns: tuple[str, ...], names: list[str]) -> list[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


@rule(desc="Generate `ml_model` targets from `ml_training`", level=LogLevel.DEBUG)
async def generate_ml_models(
    request: GenerateMlModelsRequest, config: BuildenvConfig, union_membership: UnionMembership
) -> GeneratedTargets:
    # Environment names come from files, not from `ml_environment` targets: asking for
    # targets while generating targets could cycle back into this generator.
    paths = await Get(Paths, PathGlobs([os.path.join(config.environments_dir, "*" + ENV_SUFFIX)]))
    names = environment_names(paths.files)
    generator = request.generator
    decl = next((t for t in config.trainings if t.name == generator.address.target_name), None)
    entry = generator[MlEntryField].value or (decl.entry if decl else None)
    if entry is None:
        raise InvalidFieldException(
            f"The {MlEntryField.alias!r} field in target {generator.address} must be set, "
            f"but it is not, and pyproject.toml has no "
            f"[tool.buildenv.trainings.{generator.address.target_name}] to take it from."
        )
    patterns = generator[MlEnvironmentsField].value or (decl.environments if decl else ("*",))
    seed = generator[MlSeedField].value
    timeout = generator[MlTimeoutField].value
    if decl is not None:
        seed = decl.seed if seed is None else seed
        timeout = decl.timeout if timeout is None else timeout
    matched = match_environments(tuple(patterns), names)
    if not matched:
        raise InvalidFieldException(
            f"The {MlEnvironmentsField.alias!r} field in target {generator.address} must match "
            f"at least one environment in {config.environments_dir}/, but {list(patterns)} "
            f"matched none of: {', '.join(names) or '(no environments)'}."
        )
    return GeneratedTargets(
        generator,
        (
            MlModelTarget(
                {
                    **request.template,
                    MlEntryField.alias: entry,
                    MlSeedField.alias: seed,
                    MlTimeoutField.alias: timeout,
                    MlEnvField.alias: env,
                },
                request.template_address.create_generated(env),
                union_membership,
            )
            for env in matched
        ),
    )


def rules():
    return [*collect_rules(), UnionRule(GenerateTargetsRequest, GenerateMlModelsRequest)]
