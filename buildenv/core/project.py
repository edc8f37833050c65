"""The repository buildenv works in: its root, `[tool.buildenv]`, and declared trainings.

The root is the nearest directory (from the working directory up) holding a
`pyproject.toml` or an `environments/` directory; `--root` or `BUILDENV_ROOT`
override it. Everything a user writes in paths is relative to it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean

__all__ = ["Project", "Resources", "TrainingConfig", "find_root"]


class Resources(BaseModel):
    """What one build of a training needs from the machine that runs it (`build --all
    --executor ray` asks Ray for it; a local build does not)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    cpus: float | None = Field(default=None, gt=0)
    """CPUs; default: the training's `threads` (1 when not set)."""
    memory_gb: float | None = Field(default=None, gt=0)
    """Memory in GiB; default: none reserved."""


class TrainingConfig(BaseModel):
    """`[tool.buildenv.trainings.<name>]`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    entry: str = Field(pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
    """`path/to/module.py:function`, relative to the repository root."""
    environments: list[str] = ["*"]
    """Glob patterns over environment names this training is compiled against."""
    seed: int = 0
    """Build seed: `ctx.seed`, and the seed of Python's and NumPy's global generators."""
    timeout: float = Field(default=3600.0, gt=0)
    """Seconds the training may run before it is stopped (BE302)."""
    threads: int | None = Field(default=None, ge=1)
    """Native threads (OpenMP/BLAS) the training may use; default: every core this machine
    gives the build. Recorded in the lineage and part of the cache key: parallel float
    reductions can change the last bits of a model, so a rebuild on the same machine is
    byte-identical, and `threads = 1` makes artifacts identical across machines too."""

    description: str | None = None
    """What the model does, for its model card."""
    intended_use: str | None = None
    """What the model is for (and what it is not for), for its model card."""
    limitations: str | None = None
    """Known limitations, for its model card."""
    owners: list[str] = []
    """Who answers for the model, for its model card."""
    resources: Resources = Resources()
    """`{cpus = 4, memory_gb = 8}`: what a build of the training asks of a Ray cluster."""

    def card_text(self) -> dict[str, object]:
        """The free text of the model card (part of the cache key: the card is in the
        artifact)."""
        return {k: v for k, v in (("description", self.description),
                                  ("intended_use", self.intended_use),
                                  ("limitations", self.limitations),
                                  ("owners", list(self.owners))) if v}

    @property
    def native_threads(self) -> int:
        """`threads`, or the cores this process may run on."""
        if self.threads is not None:
            return self.threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)

    @property
    def module_path(self) -> str:
        return self.entry.rsplit(":", 1)[0]

    @property
    def function(self) -> str:
        return self.entry.rsplit(":", 1)[1]


class ToolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    environments_dir: str = "environments"
    tracking_uri: str | None = None
    cache_dir: str = ".buildenv"
    executor: Literal["local", "ray"] = "local"
    """Where lock, validate and drift run the per-file work of partitioned datasets, and
    where `build --all` trains its pairs."""
    signing_key: str | None = None  # PEM EC private key: sign artifacts at build time
    verify_key: str | None = None  # PEM EC public key: verify signatures before loading
    trainings: dict[str, TrainingConfig] = {}


def find_root(start: Path | None = None) -> Path:
    env = os.environ.get("BUILDENV_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() or (candidate / "environments").is_dir():
            return candidate
    return here


@dataclass
class Project:
    root: Path
    data_root: Path | None = None  # where relative dataset uris resolve (Pants: the real repo)
    _config: ToolConfig | None = field(default=None, repr=False)

    @classmethod
    def discover(cls, root: str | Path | None = None, data_root: str | Path | None = None
                 ) -> Project:
        base = Path(root).resolve() if root else find_root()
        data = Path(data_root).resolve() if data_root else None
        return cls(root=base, data_root=data)

    @property
    def data_base(self) -> Path:
        return self.data_root or self.root

    @property
    def config(self) -> ToolConfig:
        if self._config is None:
            self._config = self._load_config()
        return self._config

    @cached_property
    def environments_dir(self) -> Path:
        return self.root / self.config.environments_dir

    @property
    def state_dir(self) -> Path:
        return self.root / self.config.cache_dir

    @property
    def data_state_dir(self) -> Path:
        """State that belongs to the data rather than to this checkout: the audit log. A Pants
        sandbox reads the real repository's data (`data_root`), and records its reads there."""
        return self.data_base / self.config.cache_dir

    @property
    def trainings(self) -> dict[str, TrainingConfig]:
        return self.config.trainings

    def tracking_uri(self) -> str:
        uri = os.environ.get("BUILDENV_TRACKING_URI") or self.config.tracking_uri
        if uri:
            return uri
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    def rel(self, path: Path) -> str:
        """A path as users see it: relative to the root when inside it."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def training(self, name: str) -> TrainingConfig:
        if name not in self.trainings:
            hint = did_you_mean(name, self.trainings) or (
                "declared trainings: " + ", ".join(sorted(self.trainings))
                if self.trainings else "declare it under [tool.buildenv.trainings.<name>]")
            raise DiagnosticError([Diagnostic("BE017", f"unknown training '{name}'",
                                              "pyproject.toml", hints=(hint,))], 2)
        return self.trainings[name]

    def _load_config(self) -> ToolConfig:
        path = self.root / "pyproject.toml"
        if not path.is_file():
            return ToolConfig()
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+), column (\d+)", str(exc))
            line, col = (int(match.group(1)), int(match.group(2))) if match else (None, None)
            raise DiagnosticError([Diagnostic("BE016", f"invalid TOML: {exc}", "pyproject.toml",
                                              line, col)], 2) from None
        tool = data.get("tool", {}).get("buildenv", {})
        try:
            return ToolConfig.model_validate(tool)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = [str(p) for p in err["loc"]]
                line = _toml_line(text, loc)
                where = "[tool.buildenv" + "".join(f".{p}" for p in loc[:-1]) + "]"
                problems.append(Diagnostic(
                    "BE016", f"{'.'.join(loc)}: {err['msg']} (in {where})", "pyproject.toml",
                    line, 1 if line else None))
            raise DiagnosticError(problems, 2) from None


def _toml_line(text: str, loc: list[str]) -> int | None:
    """Best effort: the line of the key in its table (tomllib keeps no positions)."""
    lines = text.splitlines()
    table_line = None
    for depth in range(len(loc) - 1, -1, -1):
        header = "[tool.buildenv" + "".join(f".{p}" for p in loc[:depth]) + "]"
        for i, line in enumerate(lines):
            if line.strip() == header:
                table_line = i
                break
        if table_line is not None:
            key = loc[depth] if depth < len(loc) else None
            if key is not None:
                for j in range(table_line + 1, len(lines)):
                    stripped = lines[j].strip()
                    if stripped.startswith("["):
                        break
                    if re.match(rf"^{re.escape(key)}\s*=", stripped):
                        return j + 1
            return table_line + 1
    return None
