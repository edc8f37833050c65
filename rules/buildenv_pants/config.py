"""The repo's `[tool.buildenv]` table of pyproject.toml, read through the engine."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import toml
from pants.engine.fs import DigestContents, PathGlobs
from pants.engine.rules import Get, collect_rules, rule
from pants.util.logging import LogLevel

PYPROJECT = "pyproject.toml"


@dataclass(frozen=True)
class TrainingDecl:
    """`[tool.buildenv.trainings.<name>]`."""

    name: str
    entry: str
    environments: tuple[str, ...]
    seed: Optional[int]
    timeout: Optional[float]
    threads: Optional[int] = None
    precheck: Optional[bool] = None
    sandbox: Optional[str] = None  # the training's `sandbox` (a mode or a table), as JSON


@dataclass(frozen=True)
class BuildenvConfig:
    environments_dir: str
    tracking_uri: Optional[str]
    cache_dir: str
    trainings: tuple[TrainingDecl, ...]
    sandbox: Optional[str] = None  # `[tool.buildenv] sandbox`

    @classmethod
    def parse(cls, text: str) -> BuildenvConfig:
        """Lenient: buildenv itself reports a malformed table, with line numbers."""
        try:
            tool: Any = toml.loads(text).get("tool", {}).get("buildenv", {})
        except toml.TomlDecodeError:
            tool = {}
        if not isinstance(tool, dict):
            tool = {}
        trainings = []
        raw_trainings = tool.get("trainings", {})
        for name, decl in sorted(raw_trainings.items() if isinstance(raw_trainings, dict) else ()):
            if not isinstance(decl, dict) or not isinstance(decl.get("entry"), str):
                continue
            envs = decl.get("environments", ["*"])
            trainings.append(
                TrainingDecl(
                    name=name,
                    entry=decl["entry"],
                    environments=tuple(str(e) for e in envs) if isinstance(envs, list) else ("*",),
                    seed=decl.get("seed") if isinstance(decl.get("seed"), int) else None,
                    timeout=decl.get("timeout") if isinstance(decl.get("timeout"), (int, float)) else None,
                    threads=decl.get("threads") if isinstance(decl.get("threads"), int) else None,
                    precheck=decl.get("precheck") if isinstance(decl.get("precheck"), bool) else None,
                    sandbox=json.dumps(decl["sandbox"], sort_keys=True)
                    if isinstance(decl.get("sandbox"), (str, dict)) else None,
                )
            )
        return cls(
            environments_dir=_normalize_dir(str(tool.get("environments_dir", "environments"))),
            tracking_uri=tool.get("tracking_uri") if isinstance(tool.get("tracking_uri"), str) else None,
            cache_dir=str(tool.get("cache_dir", ".buildenv")),
            trainings=tuple(trainings),
            sandbox=tool.get("sandbox") if isinstance(tool.get("sandbox"), str) else None,
        )


def _normalize_dir(path: str) -> str:
    """Build-root-relative, `""` for the root itself (as Pants spells directories)."""
    normalized = os.path.normpath(path).strip("/")
    return "" if normalized == "." else normalized


@rule(desc="Read [tool.buildenv] from pyproject.toml", level=LogLevel.DEBUG)
async def buildenv_config() -> BuildenvConfig:
    contents = await Get(DigestContents, PathGlobs([PYPROJECT]))
    text = contents[0].content.decode() if contents else ""
    return BuildenvConfig.parse(text)


def rules():
    return collect_rules()
