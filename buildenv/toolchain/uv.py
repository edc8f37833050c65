"""uv, the resolver and installer of trainings' environments, and what its failures mean.

buildenv passes everything uv should know on the command line (`--no-config`: no `uv.toml`
or `[tool.uv]` of the repository changes a resolution behind the lock's back): the indexes,
find-links and constraints of `[tool.buildenv.toolchains]`, the interpreter, offline mode.
`UV_*` variables still reach uv (credentials, cache directory, proxies); those that change
what a resolution returns are part of its key (`RESOLUTION_VARIABLES`). A failure becomes a
diagnostic: unresolvable requirements (BE351) with the resolver's reasoning condensed, an index
that does not answer (BE352) named with an offline hint, an install that failed (BE353).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project

__all__ = ["RESOLUTION_VARIABLES", "UvFailure", "UvSettings", "run_uv", "uv_binary", "uv_version"]

# Variables uv reads that change which versions a resolution picks.
RESOLUTION_VARIABLES = (
    "UV_INDEX", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
    "UV_NO_INDEX", "UV_INDEX_STRATEGY", "UV_CONSTRAINT", "UV_OVERRIDE", "UV_PRERELEASE",
    "UV_RESOLUTION", "UV_EXCLUDE_NEWER", "UV_TORCH_BACKEND", "UV_NO_BINARY", "UV_NO_BUILD",
    "UV_NO_BINARY_PACKAGE", "UV_NO_BUILD_PACKAGE", "UV_BUILD_CONSTRAINT",
)
_WHOLE_COMMAND_LIMIT = 1800.0  # a resolve or install that has not ended by then never will


def uv_binary() -> str:
    """The uv executable installed with buildenv (the `uv` distribution)."""
    try:
        from uv import (
            find_uv_bin,  # deferred: a missing uv is a diagnostic (BE355), not an ImportError
        )

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        raise DiagnosticError([Diagnostic(
            "BE355", "uv, which resolves and installs trainings' environments, is not installed "
            "with buildenv",
            hints=("pip install 'buildenv' installs it (the `uv` distribution)",
                   "or run trainings in buildenv's own interpreter: [tool.buildenv.toolchains] "
                   'mode = "interpreter"'))], 2) from None


def uv_version() -> str:
    try:
        return metadata.version("uv")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class UvSettings:
    """`[tool.buildenv.toolchains]` as uv arguments (paths made absolute)."""

    index_url: str | None
    extra_index_urls: tuple[str, ...]
    find_links: tuple[str, ...]
    constraints: tuple[Path, ...]
    offline: bool
    timeout: float

    @classmethod
    def of(cls, project: Project) -> UvSettings:
        cfg = project.config.toolchains

        def local(value: str) -> str:
            return value if "://" in value else str((project.root / value).resolve())

        return cls(cfg.index_url, tuple(cfg.extra_index_urls),
                   tuple(local(v) for v in cfg.find_links),
                   tuple((project.root / c).resolve() for c in cfg.constraints),
                   cfg.offline, cfg.timeout)

    def index_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        if self.offline:
            args.append("--offline")
        return args

    def key(self) -> dict[str, object]:
        """What of these settings decides a resolution's result (not offline, not timeout)."""
        links: dict[str, list[str] | None] = {}
        for link in self.find_links:
            path = Path(link)
            links[link] = sorted(p.name for p in path.iterdir()) if path.is_dir() else None
        constraints: dict[str, str | None] = {}
        for c in self.constraints:
            try:
                constraints[str(c)] = c.read_text(encoding="utf-8")
            except OSError:
                constraints[str(c)] = None
        variables = {k: os.environ[k] for k in RESOLUTION_VARIABLES if os.environ.get(k)}
        return {"index_url": self.index_url, "extra_index_urls": list(self.extra_index_urls),
                "find_links": links, "constraints": constraints, "variables": variables}

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["UV_HTTP_TIMEOUT"] = str(max(1, round(self.timeout)))
        env.setdefault("UV_HTTP_RETRIES", "1")
        env["UV_NO_PROGRESS"] = "1"
        env.pop("VIRTUAL_ENV", None)  # uv is told the interpreter explicitly
        return env


class UvFailure(Exception):
    """uv exited non-zero; `stderr` is what it said."""

    def __init__(self, stderr: str):
        super().__init__(stderr)
        self.stderr = stderr

    def lines(self) -> list[str]:
        """The messages without uv's decoration (`error:`, `cause:`, `hint:`, box drawing)."""
        out = []
        for raw in self.stderr.splitlines():
            line = re.sub(r"^[\s\u00d7\u2570\u2500\u25b6\u2502\u251c]*", "", raw).strip()
            line = re.sub(r"^(error|cause|caused by|hint|warning):\s*", "", line,
                          flags=re.IGNORECASE)
            if line:
                out.append(line)
        return out

    @property
    def unreachable(self) -> str | None:
        """The URL an index request failed on, when the failure is the network's."""
        text = self.stderr
        if not re.search(r"Failed to fetch|Request failed|timed out|error sending request|dns "
                         r"error|Connection refused|Could not connect|network", text,
                         flags=re.IGNORECASE):
            return None
        match = re.search(r"Failed to fetch:\s*`?(\S+?)`?\s*$", text, flags=re.MULTILINE)
        return match.group(1) if match else "the package index"

    @property
    def offline_miss(self) -> bool:
        return "network was disabled" in self.stderr or "not found in the cache" in self.stderr

    @property
    def unsolvable(self) -> bool:
        return "No solution found" in self.stderr


def run_uv(args: list[str], settings: UvSettings, cwd: Path | None = None) -> str:
    """Run `uv ARGS`; its stdout, or UvFailure."""
    try:
        proc = subprocess.run([uv_binary(), *args], cwd=cwd, env=settings.environment(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_WHOLE_COMMAND_LIMIT)
    except subprocess.TimeoutExpired:
        raise UvFailure(f"error: uv did not finish within {_WHOLE_COMMAND_LIMIT:g} s: "
                        "timed out") from None
    except OSError as exc:
        raise UvFailure(f"error: could not run uv: {exc}") from None
    if proc.returncode != 0:
        raise UvFailure(proc.stderr or proc.stdout or f"uv exited with {proc.returncode}")
    return proc.stdout
