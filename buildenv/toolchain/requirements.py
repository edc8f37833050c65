"""What goes into a training's environment, and who asked for each requirement.

In order: the training's `requirements` (default: its environment's `serving.requirements`),
then what the serving stack needs for the build's checks, then what buildenv's runner imports
(`pins.py`). A pin of buildenv's is left out when an earlier line already names the same
distribution: the training's own choice of, say, scikit-learn or pandas wins. Each
requirement keeps its origin so that a resolver failure or a version the serving stack forbids
points at the line that asked for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project, TrainingConfig
from buildenv.env.resolve import Resolved
from buildenv.toolchain.pins import PRIVATE_RELEASE, RUNNER, STACKS

__all__ = ["RUNNER_ORIGIN", "Wanted", "parse_requirement", "training_requirements"]

RUNNER_ORIGIN = "buildenv's runner"


@dataclass(frozen=True)
class Wanted:
    """One requirement of a training's environment."""

    text: str
    name: str  # canonical distribution name
    origin: str  # who asked: "training 'x'", "serving.requirements", "buildenv's runner", ...
    path: str | None = None
    line: int | None = None

    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.path and self.line else (self.path or
                                                                            self.origin)


def parse_requirement(text: str) -> Requirement:
    """A PEP 508 requirement; pip options and editable paths are not requirements."""
    if text.strip().startswith("-"):
        raise InvalidRequirement("pip options are not requirements; set indexes and "
                                 "find-links under [tool.buildenv.toolchains]")
    return Requirement(text)


def training_requirements(project: Project, training: str, config: TrainingConfig,
                          res: Resolved) -> list[Wanted]:
    """The requirements to resolve for `training` in `res` (not used with `lock`)."""
    out: list[Wanted] = []
    problems: list[Diagnostic] = []
    if config.requirements is not None:
        for i, text in enumerate(config.requirements):
            line = project.config_line("trainings", training, "requirements", i)
            out += _parsed(text, f"training '{training}'", ("pyproject.toml", line), problems)
    elif res.env.serving is not None:
        for i, text in enumerate(res.env.serving.requirements):
            pos = res.where("serving", "requirements", i)
            out += _parsed(text, "serving.requirements", (pos.path, pos.line) if pos else
                           (None, None), problems)
    if problems:
        raise DiagnosticError(problems, 2)
    named = {w.name for w in out}
    stack = res.env.serving.stack if res.env.serving is not None else "sklearn"
    private = PRIVATE_RELEASE if res.env.privacy.release == "dp" else {}
    for origin, pins in ((f"the {stack} serving stack", STACKS.get(stack, {})),
                         ("privacy.release: dp", private), (RUNNER_ORIGIN, RUNNER)):
        for name, version in pins.items():
            key = canonicalize_name(name)
            if key not in named:
                named.add(key)
                out.append(Wanted(f"{name}=={version}", key, origin))
    return out


def _parsed(text: str, origin: str, where: tuple[str | None, int | None],
            problems: list[Diagnostic]) -> list[Wanted]:
    try:
        req = parse_requirement(text)
    except InvalidRequirement as exc:
        problems.append(Diagnostic("BE350", f"invalid requirement '{text}' ({origin}): {exc}",
                                   where[0], where[1],
                                   hints=("write a pip requirement such as "
                                          "'scikit-learn>=1.8,<2'",)))
        return []
    return [Wanted(text, canonicalize_name(req.name), origin, where[0], where[1])]
