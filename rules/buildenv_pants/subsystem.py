"""`[buildenv]` options of the plugin."""

from __future__ import annotations

from typing import Optional

from pants.engine.addresses import UnparsedAddressInputs
from pants.option.option_types import BoolOption, IntOption, StrOption, TargetListOption
from pants.option.subsystem import Subsystem
from pants.util.strutil import softwrap


class Buildenv(Subsystem):
    # Not `ml-...`: a scope must not collide with a target alias.
    options_scope = "buildenv"
    help = "Compile ML trainings against buildenv environments."

    _runtime = TargetListOption(
        help=softwrap(
            """
            Targets that provide the `buildenv` package and its requirements to the sandboxed
            `python -m buildenv` processes: its `python_sources` when buildenv is first-party
            (as in buildenv's own repo), or the `python_requirement` on `buildenv` otherwise.
            """
        ),
    )
    data_root = StrOption(
        default=None,
        help=softwrap(
            """
            Absolute directory against which relative dataset URIs are resolved (default: the
            build root). Data is not copied into sandboxes: the lock file is an input of every
            build process, and buildenv refuses to build when a dataset's bytes differ from
            the lock's digest. The path is part of the process cache key: CI machines that
            share a remote cache should check out at (or point this at) the same path.
            """
        ),
    )
    register = BoolOption(
        default=False,
        help=softwrap(
            """
            Also log and register each packaged model in MLflow tracking (`buildenv register`),
            as `buildenv build` does. Off by default: `package` stays a pure, cacheable build.
            Registration runs once per Pants run and model (it is idempotent in buildenv).
            """
        ),
    )
    tracking_uri = StrOption(
        default=None,
        help=softwrap(
            """
            MLflow tracking URI used by `register`. Default: the environment variable
            `BUILDENV_TRACKING_URI`, then `[tool.buildenv] tracking_uri` in pyproject.toml, then
            `sqlite:///<build root>/.buildenv/mlflow.db`.
            """
        ),
    )
    remote_cache_speculation_delay = IntOption(
        default=60_000,
        advanced=True,
        help=softwrap(
            """
            Milliseconds a training process waits for a pending remote cache lookup before
            it starts training locally (Pants races the two). Trainings are expensive and
            lookups cheap, so wait.
            """
        ),
    )

    @property
    def runtime(self) -> UnparsedAddressInputs:
        return UnparsedAddressInputs(
            self._runtime,
            owning_address=None,
            description_of_origin=f"the option `[{self.options_scope}].runtime`",
        )

    def data_root_or(self, build_root: str) -> str:
        value: Optional[str] = self.data_root
        return value or build_root

