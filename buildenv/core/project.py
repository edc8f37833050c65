"""The repository buildenv works in: its root, `[tool.buildenv]`, and declared trainings.

The root is the nearest directory (from the working directory up) holding a
`pyproject.toml` with a `[tool.buildenv]` table or an `environments/` directory;
`--root` or `BUILDENV_ROOT` override it. Commands refuse to run outside a project
(BE040) rather than report on an empty one. Everything a user writes in paths is
relative to the root.
"""

# Annotations not postponed (no `from __future__ import annotations`), as in the environment
# models: pydantic would evaluate each field's annotation text when it makes each model class.
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean
from buildenv.core.roots import find_root, is_project, require_project
from buildenv.core.toml_keys import key_positions, position_of

__all__ = ["TOOLCHAINS_DIR_ENV", "Project", "Resources", "SandboxMode", "ToolchainsConfig",
           "TrainingConfig", "TrainingSandbox", "config_problems", "find_root", "is_project",
           "require_project"]

TOOLCHAINS_DIR_ENV = "BUILDENV_TOOLCHAINS_DIR"

SandboxMode = Literal["required", "preferred", "off"]


class TrainingSandbox(BaseModel):
    """`sandbox` of a training: a mode (`sandbox = "required"`) or a table of narrow opt-ins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: SandboxMode | None = None
    """`required`, `preferred` or `off`; default: `[tool.buildenv] sandbox`."""
    network: Literal["none", "allow"] = "none"
    """`allow` lets the training reach the network (never with restricted data); say why in
    `reason`."""
    reason: str | None = None
    """Why the training needs the network (recorded in the lineage)."""
    read_only: list[str] = []
    """Extra paths the training may read (absolute, or relative to the root); they never
    uncover what the sandbox hides."""

    @model_validator(mode="after")
    def _reason_given(self) -> Self:
        if self.network == "allow" and not (self.reason or "").strip():
            raise ValueError('network = "allow" needs a `reason`: why the training must reach '
                             "the network")
        return self


def _sandbox_table(value: object) -> object:
    return {"mode": value} if isinstance(value, str) else value


class Resources(BaseModel):
    """What one build of a training needs from the machine that runs it (`build --all
    --executor ray` asks Ray for it; a local build does not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float | None = Field(default=None, gt=0)
    """CPUs; default: the training's `threads` (1 when not set)."""
    memory_gb: float | None = Field(default=None, gt=0)
    """Memory in GiB; default: none reserved."""


class TrainingConfig(BaseModel):
    """`[tool.buildenv.trainings.<name>]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    requirements: list[str] | None = None
    """The libraries the training imports, as pip requirements: resolved (with what buildenv's
    runner needs) into the training's own locked environment. Default: the environment's
    `serving.requirements`, so the model is trained with what serving installs."""
    lock: str | None = None
    """A hashed requirements lock file (relative to the root; `uv pip compile
    --generate-hashes` or `buildenv toolchain --write-lock` output): installed as is, nothing
    is resolved. Excludes `requirements`."""

    precheck: bool = True
    """Before the full fit, run the training on a sample of its rows and verify the model's
    inputs and operations, so a refusal comes in seconds (the training function runs twice;
    see docs/training.md)."""
    sandbox: Annotated[TrainingSandbox, BeforeValidator(_sandbox_table)] = TrainingSandbox()
    """How the training process is isolated (docs/sandbox.md)."""

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

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.requirements is not None and self.lock is not None:
            raise ValueError("set `requirements` or `lock`, not both: a lock already pins "
                             "every requirement")
        return self

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


class ToolchainsConfig(BaseModel):
    """`[tool.buildenv.toolchains]`: where trainings' environments come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["resolve", "interpreter"] = "resolve"
    """`resolve`: each training runs in its own environment, resolved from its requirements
    with uv. `interpreter`: trainings run in the interpreter running buildenv (what the Pants
    plugin uses: there, the training's resolve is that interpreter)."""
    index_url: str | None = None
    """The package index (default: uv's, PyPI). A URL or a local `file://` index."""
    extra_index_urls: list[str] = []
    """More indexes, searched after `index_url`."""
    find_links: list[str] = []
    """Directories (relative to the root) or URLs of wheel files, e.g. a wheelhouse."""
    constraints: list[str] = []
    """Constraint files (relative to the root) applied to every resolution."""
    offline: bool = False
    """Resolve and install only from uv's cache and local `find_links`: no network."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds a package index may take to answer before the build stops (BE352)."""
    dir: str | None = None
    """Where locked environments are kept (default `<cache_dir>/toolchains`; relative to the
    root). Environments are content-addressed, so checkouts may share one directory."""


class ToolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    environments_dir: str = "environments"
    tracking_uri: str | None = None
    cache_dir: str = ".buildenv"
    executor: Literal["local", "ray"] = "local"
    """Where lock, validate and drift run the per-file work of partitioned datasets, and
    where `build --all` trains its pairs."""
    store: str | None = None
    """The shared object store `buildenv push` / `pull` use: an `s3://bucket/prefix`, or a
    directory (relative to the repository root)."""
    signing_key: str | None = None  # PEM EC private key: sign artifacts at build time
    verify_key: str | None = None  # PEM EC public key: verify signatures before loading
    sandbox: SandboxMode | None = None
    """How training processes are isolated; default `preferred` on Linux, `off` elsewhere."""
    trainings: dict[str, TrainingConfig] = {}
    toolchains: ToolchainsConfig = ToolchainsConfig()


@dataclass
class Project:
    root: Path
    data_root: Path | None = None  # where relative dataset uris resolve (Pants: the real repo)
    _config: ToolConfig | None = field(default=None, repr=False)

    @classmethod
    def discover(cls, root: str | Path | None = None, data_root: str | Path | None = None
                 ) -> Self:
        base = Path(root).resolve() if root else find_root(required=False)
        data = Path(data_root).resolve() if data_root else None
        return cls(root=base, data_root=data)

    @classmethod
    def open(cls, root: str | Path | None = None, data_root: str | Path | None = None
             ) -> Self:
        """The project a command works on: `root` (which must be a project), else the one
        `find_root` finds; BE040 (exit 2) when there is none, so that a command run in the wrong
        directory fails instead of reporting on nothing."""
        if root:
            require_project(Path(root).resolve(), "--root")
        else:
            find_root()
        return cls.discover(root, data_root)

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
    def toolchains_dir(self) -> Path:
        """Where trainings' locked environments live (`BUILDENV_TOOLCHAINS_DIR` wins)."""
        configured = os.environ.get(TOOLCHAINS_DIR_ENV) or self.config.toolchains.dir
        if configured:
            path = Path(configured).expanduser()
            return path if path.is_absolute() else self.root / path
        return self.state_dir / "toolchains"

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

    def config_line(self, *loc: str | int) -> int | None:
        """The line of `[tool.buildenv]` key `loc` in pyproject.toml (best effort); an int last
        part is an index into the key's array (its element's line)."""
        try:
            text = (self.root / "pyproject.toml").read_text(encoding="utf-8")
        except OSError:
            return None
        keys = tuple(str(p) for p in loc if not isinstance(p, int))
        pos = position_of(key_positions(text), ("tool", "buildenv", *keys))
        line = pos[0] if pos else None
        index = loc[-1] if loc and isinstance(loc[-1], int) else None
        if line is None or index is None:
            return line
        return _array_item_line(text, line, index) or line

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
            raise DiagnosticError(config_problems(exc, text), 2) from None


_TOML_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|#|\]')


def _array_item_line(text: str, key_line: int, index: int) -> int | None:
    """The line of the `index`-th string of the array that starts at `key_line` (1-based)."""
    seen = -1
    for number, line in enumerate(text.splitlines()[key_line - 1:], start=key_line):
        body = line.split("=", 1)[1] if number == key_line and "=" in line else line
        for token in _TOML_TOKEN.finditer(body):
            if token.group() == "#":
                break  # a comment: the rest of the line
            if token.group() == "]":
                return None
            seen += 1
            if seen == index:
                return number
    return None


def config_problems(exc: ValidationError, text: str) -> list[Diagnostic]:
    """`[tool.buildenv]` validation errors as diagnostics at the line and column of their key,
    worded like the environment files' (unknown key with a "did you mean", missing key, ...)."""
    positions = key_positions(text)
    problems = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        kind = err["type"]
        table = "[" + ".".join(("tool", "buildenv") + loc[:-1]) + "]"
        dotted = ".".join(loc)
        hints: tuple[str, ...] = ()
        where = loc
        if kind == "extra_forbidden":
            known = _known_keys(loc[:-1])
            hint = did_you_mean(loc[-1], known) or (
                "allowed keys: " + ", ".join(sorted(known)) if known else None)
            if loc[-2:-1] == ("resources",) and "gpu" in loc[-1].lower():  # not cpus misspelt
                hint = ("a build asks Ray for CPUs and memory only (cpus, memory_gb); GPUs are "
                        "not a resource it requests yet")
            hints = (hint,) if hint else ()
            message = f"unknown key '{loc[-1]}' in {table}"
        elif kind == "missing":
            where = loc[:-1]
            message = f"missing key '{loc[-1]}' in {table}"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            choices = re.findall(r"'([^']*)'", expected)
            hint = did_you_mean(str(err.get("input")), choices)
            hints = (hint,) if hint else ()
            message = f"{dotted}: {err['input']!r} is not one of {expected}"
        elif kind == "string_pattern_mismatch" and loc[-1] == "entry":
            message = (f"{dotted}: {err['input']!r} is not `path/to/module.py:function` "
                       "(relative to the repository root)")
            hints = ("e.g. entry = \"trainings/churn.py:train\"",)
        else:
            message = f"{dotted}: {err['msg']}"
        pos = position_of(positions, ("tool", "buildenv") + where)
        problems.append(Diagnostic("BE016", message, "pyproject.toml",
                                   pos[0] if pos else None, pos[1] if pos else None,
                                   hints=hints))
    return problems


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    """Keys allowed in the table at `loc` under `[tool.buildenv]` (for "did you mean")."""
    if not loc:
        return list(ToolConfig.model_fields)
    if loc[0] == "trainings" and len(loc) == 2:
        return list(TrainingConfig.model_fields)
    if loc[0] == "trainings" and len(loc) == 3 and loc[2] == "resources":
        return list(Resources.model_fields)  # `gpus` and the like: say what there is
    if loc == ("toolchains",):
        return list(ToolchainsConfig.model_fields)
    return []
