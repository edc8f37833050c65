"""The buildenv Pants plugin: `ml_environment`, `ml_training` -> `ml_model` targets."""

from buildenv_pants import (
    check,
    config,
    generate,
    infer,
    package,
    register_model,
    sandbox,
    sources,
    tailor,
)
from buildenv_pants.target_types import target_types as _target_types


def target_types():
    return _target_types()


def rules():
    return [
        *config.rules(),
        *generate.rules(),
        *sources.rules(),
        *infer.rules(),
        *sandbox.rules(),
        *check.rules(),
        *package.rules(),
        *register_model.rules(),
        *tailor.rules(),
    ]
