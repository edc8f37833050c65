"""`pants tailor`: `ml_environment` per environment file, `ml_training` per training of
`[tool.buildenv.trainings.*]` in pyproject.toml."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pants.core.goals.tailor import (
    PutativeTarget,
    PutativeTargets,
    PutativeTargetsRequest,
)
from pants.engine.fs import PathGlobs, Paths
from pants.engine.internals.selectors import Get
from pants.engine.rules import collect_rules, rule
from pants.engine.target import AllUnexpandedTargets
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel

from buildenv_pants.config import BuildenvConfig
from buildenv_pants.target_types import MlEnvironmentSourcesField, MlTrainingTarget


@dataclass(frozen=True)
class PutativeBuildenvTargetsRequest(PutativeTargetsRequest):
    pass


def _in_dirs(path: str, dirs: tuple[str, ...]) -> bool:
    return any(d in ("", ".") or path == d or path.startswith(d + "/") for d in dirs)


@rule(desc="Determine candidate buildenv targets to create", level=LogLevel.DEBUG)
async def find_putative_buildenv_targets(
    request: PutativeBuildenvTargetsRequest,
    config: BuildenvConfig,
    all_targets: AllUnexpandedTargets,
) -> PutativeTargets:
    env_dir = config.environments_dir
    env_files = await Get(Paths, PathGlobs([os.path.join(env_dir, "*.yaml")]))
    # Other targets (e.g. `files` for tests) may own environment files too: only an
    # `ml_environment` owner counts.
    env_owned = {
        os.path.join(t.address.spec_path, g)
        for t in all_targets
        if t.has_field(MlEnvironmentSourcesField)
        for g in t[MlEnvironmentSourcesField].globs
    }
    putative = []
    if _in_dirs(env_dir, request.dirs):
        for path in env_files.files:
            if path in env_owned:
                continue
            stem = os.path.basename(path)[: -len(".yaml")]
            putative.append(
                PutativeTarget(
                    env_dir,
                    stem,
                    "ml_environment",
                    triggering_sources=(),
                    owned_sources=(),
                )
            )

    existing_trainings = {
        t.address.target_name for t in all_targets if isinstance(t, MlTrainingTarget)
    }
    for training in config.trainings:
        if training.name in existing_trainings:
            continue
        directory = os.path.dirname(training.entry.rsplit(":", 1)[0])
        if not _in_dirs(directory, request.dirs):
            continue
        putative.append(
            PutativeTarget(
                directory,
                training.name,
                MlTrainingTarget.alias,
                triggering_sources=(),
                owned_sources=(),
                # Explicit even when it equals the directory's name: the training's name.
                kwargs={"name": training.name},
                comments=(
                    f"# entry, environments, seed: [tool.buildenv.trainings.{training.name}] "
                    "in pyproject.toml",
                ),
            )
        )
    return PutativeTargets(putative)


def rules():
    return [*collect_rules(), UnionRule(PutativeTargetsRequest, PutativeBuildenvTargetsRequest)]
