"""Targets: `ml_environment`, `ml_training` and the `ml_model`s it generates.

An `ml_model` is one (training, environment) pair: the unit that is checked,
built, cached and packaged into `dist/<training>/<env>/`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from pants.engine.addresses import Address
from pants.engine.target import (
    COMMON_TARGET_FIELDS,
    Dependencies,
    FieldSet,
    FloatField,
    IntField,
    InvalidFieldException,
    MultipleSourcesField,
    StringField,
    StringSequenceField,
    Target,
    TargetGenerator,
)
from pants.util.strutil import help_text

ENTRY_RE = re.compile(r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")


# --- ml_environment ---------------------------------------------------------------------


class MlEnvironmentSourcesField(MultipleSourcesField):
    expected_file_extensions = (".yaml", ".json")
    help = help_text(
        """
        The environment file and its lock. Defaults to `<name>.yaml` and `<name>.lock.json`
        in this directory, where `<name>` is the target's name (= the environment's name).
        """
    )

    @classmethod
    def compute_value(
        cls, raw_value: Optional[Iterable[str]], address: Address
    ) -> Optional[tuple[str, ...]]:
        if raw_value is None:
            name = address.target_name
            raw_value = (f"{name}.yaml", f"{name}.lock.json")
        value = super().compute_value(raw_value, address)
        yamls = [glob for glob in value or () if glob.endswith(".yaml")]
        if len(yamls) != 1 or "*" in yamls[0]:
            raise InvalidFieldException(
                f"The {cls.alias!r} field in target {address} must name exactly one "
                f"environment file `<name>.yaml` (and optionally its `<name>.lock.json`), "
                f"but it was set to {sorted(value or ())}."
            )
        return value

    @property
    def env_name(self) -> str:
        """The environment's name: the stem of its YAML file."""
        yaml_file = next(glob for glob in self.globs if glob.endswith(".yaml"))
        return os.path.basename(yaml_file)[: -len(".yaml")]

    @property
    def yaml_path(self) -> str:
        yaml_file = next(glob for glob in self.globs if glob.endswith(".yaml"))
        return os.path.join(self.address.spec_path, yaml_file)


class MlEnvironmentDependenciesField(Dependencies):
    help = help_text(
        """
        Addresses this environment depends on. The parent named by `extends:` is inferred.
        """
    )


class MlEnvironmentTarget(Target):
    alias = "ml_environment"
    core_fields = (*COMMON_TARGET_FIELDS, MlEnvironmentDependenciesField, MlEnvironmentSourcesField)
    help = help_text(
        """
        A buildenv environment: `<name>.yaml` plus its lock `<name>.lock.json`.

        Name the target after the environment (`ml_environment(name="prod-2026-09")`);
        `pants tailor` writes one for every environment file.
        """
    )


# --- ml_training / ml_model -------------------------------------------------------------


class MlEntryField(StringField):
    alias = "entry"
    help = help_text(
        """
        The training function, `path/to/module.py:function`, relative to the build root.
        Default: `entry` of `[tool.buildenv.trainings.<name>]` in pyproject.toml. The file's
        owning target is an inferred dependency.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[str], address: Address) -> Optional[str]:
        value = super().compute_value(raw_value, address)
        if value is not None and not ENTRY_RE.match(value):
            raise InvalidFieldException(
                f"The {cls.alias!r} field in target {address} must look like "
                f"`path/to/module.py:function`, but it was set to {value!r}."
            )
        return value

    @property
    def module_path(self) -> str:
        assert self.value is not None
        return self.value.rsplit(":", 1)[0]


class MlModelEntryField(MlEntryField):
    required = True
    help = "The training function, `path/to/module.py:function`, relative to the build root."


class MlEnvironmentsField(StringSequenceField):
    alias = "environments"
    help = help_text(
        """
        Glob patterns (fnmatch) over environment names: one `ml_model` target is generated
        per matching environment, addressed `<this target>#<environment>`. Default:
        `environments` of `[tool.buildenv.trainings.<name>]` in pyproject.toml, else `["*"]`.
        """
    )


class MlSeedField(IntField):
    alias = "seed"
    help = help_text(
        """
        The build seed (`ctx.seed`). Default: pyproject.toml's `seed` for this training, else
        buildenv's default (0).
        """
    )


class MlTimeoutField(FloatField):
    alias = "timeout"
    help = help_text(
        """
        Seconds the training may run before buildenv stops it. Default: pyproject.toml's
        `timeout` for this training, else buildenv's.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[float], address: Address) -> Optional[float]:
        value = super().compute_value(raw_value, address)
        if value is not None and value <= 0:
            raise InvalidFieldException(
                f"The {cls.alias!r} field in target {address} must be > 0, but it was {value}."
            )
        return value


class MlEnvField(StringField):
    # Not `environment`: that field alias is reserved by Pants.
    alias = "env"
    required = True
    help = "The name of the environment this model is compiled against."


class MlDependenciesField(Dependencies):
    help = help_text(
        """
        Addresses of the code the training imports. The owner of `entry` and the
        `ml_environment` of the environment are inferred.
        """
    )


class MlModelTarget(Target):
    alias = "ml_model"
    core_fields = (
        *COMMON_TARGET_FIELDS,
        MlModelEntryField,
        MlEnvField,
        MlSeedField,
        MlTimeoutField,
        MlDependenciesField,
    )
    help = help_text(
        """
        One training compiled against one environment. Usually generated by `ml_training`.

        `pants check` runs buildenv's static checks on it; `pants package` builds its
        artifact into `dist/<training>/<env>/`, where `<training>` is the target's name.
        """
    )


class MlTrainingTarget(TargetGenerator):
    alias = "ml_training"
    core_fields = (*COMMON_TARGET_FIELDS, MlEntryField, MlEnvironmentsField, MlSeedField, MlTimeoutField)
    copied_fields = (*COMMON_TARGET_FIELDS, MlEntryField, MlSeedField, MlTimeoutField)
    moved_fields = (MlDependenciesField,)
    generated_target_cls = MlModelTarget
    help = help_text(
        """
        A training compiled against every environment matching `environments`. The target's
        name is the training's name: fields left unset come from
        `[tool.buildenv.trainings.<name>]` in pyproject.toml, so the training is declared once.

        Generates one `ml_model` target per matching environment, `<address>#<env>`.
        """
    )


@dataclass(frozen=True)
class MlModelFieldSet(FieldSet):
    required_fields = (MlEntryField, MlEnvField)

    entry: MlEntryField
    env: MlEnvField
    seed: MlSeedField
    timeout: MlTimeoutField

    @property
    def training(self) -> str:
        return self.address.target_name

    @property
    def env_name(self) -> str:
        assert self.env.value is not None
        return self.env.value


def target_types():
    return [MlEnvironmentTarget, MlTrainingTarget, MlModelTarget]
