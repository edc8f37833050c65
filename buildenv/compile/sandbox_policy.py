"""What isolation a training asks for: its sandbox policy, from `pyproject.toml` and the
environment (docs/sandbox.md).

The mode comes from the training's `sandbox`, else `[tool.buildenv] sandbox`, else the default
(`preferred` on Linux, `off` elsewhere); an environment with restricted datasets makes it
`required` unless its `privacy.sandbox` is `optional`. Opt-ins are the training's own and
narrow: `network = "allow"` with a reason (refused next to restricted data), and extra
read-only paths. The policy is part of the build's cache key; what actually applied is
recorded in the lineage.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project, TrainingConfig
from buildenv.env.resolve import Resolved

__all__ = ["SandboxPolicy", "default_mode", "sandbox_policy", "source_policy"]


def default_mode() -> str:
    return "preferred" if sys.platform.startswith("linux") else "off"


@dataclass(frozen=True)
class SandboxPolicy:
    mode: str
    """`required` | `preferred` | `off`."""
    network: bool
    """Whether the training may reach the network."""
    reason: str | None
    """Why it may (the training's own words)."""
    read_only: tuple[str, ...]
    """Extra readable paths, as configured (absolute, or relative to the root)."""
    read_only_paths: tuple[str, ...]
    """The same, resolved."""
    source: str
    """Where the mode comes from, for messages."""

    def key(self) -> dict:
        """What the cache key holds of it."""
        return {"mode": self.mode, "network": "allow" if self.network else "none",
                "read_only": list(self.read_only)}


def sandbox_policy(project: Project, training: str, config: TrainingConfig, res: Resolved
                   ) -> SandboxPolicy:
    """The policy of one (training, environment) pair; DiagnosticError (BE325, exit 2) when its
    opt-ins do not hold."""
    own = config.sandbox
    mode: str
    table = f"[tool.buildenv.trainings.{training}]"
    if own.mode is not None:
        mode, source = own.mode, f"pyproject.toml {table} sandbox"
    elif project.config.sandbox is not None:
        mode, source = project.config.sandbox, "pyproject.toml [tool.buildenv] sandbox"
    else:
        mode, source = default_mode(), "the default"
    privacy = res.env.privacy
    restricted = bool(privacy.restricted) and privacy.sandbox == "required"
    if restricted:
        mode = "required"
        source = (f"environment {res.name} restricts {', '.join(sorted(privacy.restricted))} "
                  "(privacy.sandbox)")
    problems = []
    if own.network == "allow" and restricted:
        problems.append(Diagnostic(
            "BE325", f"training '{training}' asks for the network, and environment {res.name} "
            f"restricts {', '.join(sorted(privacy.restricted))}: a training that reads "
            "restricted data never reaches the network", "pyproject.toml",
            project.config_line("trainings", training, "sandbox", "network"),
            hints=(f'remove network = "allow" from {table} sandbox',
                   "or build against an environment without restricted data")))
    paths = []
    for raw in own.read_only:
        path = (project.root / Path(raw).expanduser()).resolve()
        if not path.exists():
            problems.append(Diagnostic(
                "BE325", f"{table} sandbox.read_only: '{raw}' does not exist",
                "pyproject.toml",
                project.config_line("trainings", training, "sandbox", "read_only"),
                hints=("give an existing file or directory (absolute, or relative to the "
                       "root)",)))
        paths.append(str(path))
    if problems:
        raise DiagnosticError(problems, 2)
    return SandboxPolicy(mode, own.network == "allow", own.reason, tuple(own.read_only),
                         tuple(paths), source)


def source_policy(project: Project, res: Resolved) -> SandboxPolicy:
    """The policy of the process running code-made sources (derived datasets' transforms,
    labeling functions): `[tool.buildenv] sandbox` (else the default), `required` next to
    restricted data as for a training; never the network, no extra paths (no opt-ins)."""
    mode: str
    if project.config.sandbox is not None:
        mode, source = project.config.sandbox, "pyproject.toml [tool.buildenv] sandbox"
    else:
        mode, source = default_mode(), "the default"
    privacy = res.env.privacy
    if privacy.restricted and privacy.sandbox == "required":
        mode = "required"
        source = (f"environment {res.name} restricts {', '.join(sorted(privacy.restricted))} "
                  "(privacy.sandbox)")
    return SandboxPolicy(mode, False, None, (), (), source)
