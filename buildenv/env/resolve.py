"""The multiverse: environment files, `extends` resolution, validation, provenance.

Resolution (SPEC §2): walk `extends` to the root, then overlay files root
first: mappings merge key by key, lists and scalars replace, `null` deletes an
inherited key. Every resolved value remembers the file and line it came from,
which is how errors in a parent point at the parent, and how
`buildenv show --explain` works. Validation runs on the resolved form, and all
problems of every file are reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean, sort_diagnostics
from buildenv.core.project import Project
from buildenv.env.canonical_form import canonical_document
from buildenv.env.evaluation_rules import evaluation_problems
from buildenv.env.loader import KeyPath, Located, Position, load_yaml
from buildenv.env.meaning import file_meaning
from buildenv.env.overlay import overlay as _overlay
from buildenv.env.privacy_rules import privacy_problems
from buildenv.env.references import semantic_problems
from buildenv.env.source_rules import fill_sources
from buildenv.env.spec import (
    CURRENT_SCHEMA,
    Environment,
)
from buildenv.env.validation_errors import pydantic_problems

__all__ = ["Multiverse", "Resolved", "canonical_environment", "environment_digest"]


@dataclass
class Resolved:
    """A validated environment plus where each of its values was written."""

    env: Environment
    chain: list[str]  # root first, this environment last
    raw: dict[str, Any]  # the merged document before validation
    origin: dict[KeyPath, Position] = field(repr=False)

    @property
    def name(self) -> str:
        return self.env.name

    @property
    def digest(self) -> str:
        return environment_digest(self.env)

    def where(self, *path: Any) -> Position | None:
        """Position of the closest written key on `path` (falls back to parents)."""
        key = tuple(path)
        while key:
            if key in self.origin:
                return self.origin[key]
            key = key[:-1]
        return self.origin.get(())

    def diag(self, code: str, message: str, *path: Any, hints: tuple[str, ...] = (),
             severity: Any = None) -> Diagnostic:
        pos = self.where(*path)
        kwargs = {"severity": severity} if severity is not None else {}
        return Diagnostic(code, message, pos.path if pos else None, pos.line if pos else None,
                          pos.col if pos else None, hints=hints, **kwargs)


class Multiverse:
    """All environments of a project; files are parsed once and shared between chains."""

    def __init__(self, project: Project):
        self.project = project
        self._files: dict[str, Located] = {}
        self._meanings: dict[str, str | None] = {}  # each file's, taken before resolving
        self._resolved: dict[str, Resolved] = {}

    # --- files --------------------------------------------------------------------
    def names(self) -> list[str]:
        folder = self.project.environments_dir
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(".yaml")] for p in folder.glob("*.yaml")
                      if not p.name.startswith("."))

    def path(self, name: str) -> Path:
        return self.project.environments_dir / f"{name}.yaml"

    def display(self, name: str) -> str:
        return self.project.rel(self.path(name))

    def _load(self, name: str) -> Located:
        if name not in self._files:
            located = load_yaml(self.path(name), self.display(name))
            if not isinstance(located.data, dict):
                raise DiagnosticError([Diagnostic(
                    "BE004", "an environment file is a mapping of keys (name, datasets, ...)",
                    self.display(name), 1, 1)], 2)
            self._files[name] = located
            self._meanings[name] = file_meaning(located)
        return self._files[name]

    def meanings(self) -> dict[str, str | None]:
        """`env.meaning.file_meaning` of each environment file read so far, by name."""
        return dict(self._meanings)

    def written(self, name: str) -> dict[str, Any]:
        """The keys of `name`'s own file as written (not resolved, not validated); empty when
        the file cannot be read (for listing an invalid environment)."""
        try:
            data: dict[str, Any] = self._load(name).data
            return data
        except DiagnosticError:
            return {}

    def require(self, name: str) -> None:
        if not self.path(name).is_file():
            hint = did_you_mean(name, self.names()) or "`buildenv envs` lists the environments"
            raise DiagnosticError([Diagnostic("BE014", f"unknown environment '{name}'",
                                              hints=(hint,))], 2)

    def children(self, name: str) -> list[str]:
        out = []
        for other in self.names():
            try:
                data = self._load(other).data
            except DiagnosticError:
                continue
            if data.get("extends") == name:
                out.append(other)
        return out

    # --- chains -------------------------------------------------------------------
    def chain(self, name: str) -> list[str]:
        """Names from the root ancestor to `name`; BE007/BE008 name every file involved."""
        seen: list[str] = []
        current: str | None = name
        while current is not None:
            if current in seen:
                files = " -> ".join(self.display(n) for n in [*seen, current])
                pos = self._load(seen[-1]).keys.get(("extends",))
                raise DiagnosticError([Diagnostic(
                    "BE008", f"extends cycle: {files}", pos.path if pos else None,
                    pos.line if pos else None, pos.col if pos else None,
                    hints=("remove `extends` from one environment of the cycle",))], 2)
            seen.append(current)
            located = self._load(current)
            parent = located.data.get("extends")
            if parent is not None and not isinstance(parent, str):
                pos = located.keys[("extends",)]
                raise DiagnosticError([Diagnostic("BE004", "extends takes an environment name",
                                                  pos.path, pos.line, pos.col)], 2)
            if parent is not None and not self.path(parent).is_file():
                pos = located.keys[("extends",)]
                chain = " -> ".join(self.display(n) for n in seen)
                hint = did_you_mean(parent, self.names())
                raise DiagnosticError([Diagnostic(
                    "BE007", f"unknown parent '{parent}': no {self.project.rel(self.path(parent))}"
                    f" (chain: {chain})", pos.path, pos.line, pos.col,
                    hints=(hint,) if hint else ())], 2)
            current = parent
        return list(reversed(seen))

    # --- resolution -----------------------------------------------------------------
    def resolve(self, name: str) -> Resolved:
        """The validated environment, or DiagnosticError(exit 2) listing every problem."""
        if name in self._resolved:
            return self._resolved[name]
        self.require(name)
        chain = self.chain(name)
        merged: dict[str, Any] = {}
        origin: dict[KeyPath, Position] = {}
        deleted: dict[KeyPath, Position] = {}
        for link in chain:
            located = self._load(link)
            _overlay(merged, located.data, (), located, origin, deleted)
        # a problem of the document as a whole (a missing top-level key) names this file
        origin[()] = Position(self.display(name), 1, 1)
        problems = self._name_problems(chain)
        for link in chain:
            problems.extend(self._load(link).problems)
        versions = self._version_problems(chain)
        if versions:  # another format: its keys would only produce noise
            raise DiagnosticError(problems + versions, 2)
        env: Environment | None = None
        try:
            env = Environment.model_validate(merged)
        except ValidationError as exc:
            files = [self.display(link) for link in chain]
            problems.extend(p for p in pydantic_problems(exc, merged, origin, files)
                            # a missing `name` is reported per file by _name_problems
                            if not (p.code == "BE005" and p.message == "missing key 'name'"))
        problems.extend(semantic_problems(merged, origin, self.project))
        problems = _blame_deletions(problems, deleted, self.display(name))
        if any(p.is_error for p in problems):
            raise DiagnosticError(problems, 2)
        assert env is not None
        env = fill_sources(env, _state_uri(self.project))
        resolved = Resolved(env=env, chain=chain, raw=merged, origin=origin)
        evaluation = evaluation_problems(resolved)
        if evaluation:
            raise DiagnosticError(problems + evaluation, 2)
        if env.extends is not None:
            loosened = privacy_problems(resolved, self.resolve(env.extends))
            if loosened:
                raise DiagnosticError(loosened, 2)
        self._resolved[name] = resolved
        return resolved

    def resolve_all(self, names: list[str] | None = None) -> tuple[dict[str, Resolved],
                                                                    list[Diagnostic]]:
        """Every environment that resolves, and all problems of those that do not."""
        out: dict[str, Resolved] = {}
        problems: list[Diagnostic] = []
        for name in names or self.names():
            try:
                out[name] = self.resolve(name)
            except DiagnosticError as exc:
                problems.extend(exc.diagnostics)
        return out, sort_diagnostics(problems)

    def _version_problems(self, chain: list[str]) -> list[Diagnostic]:
        """BE013 for each file declaring a `schema:` version this buildenv does not read."""
        problems = []
        for link in chain:
            located = self._load(link)
            version = located.data.get("schema")
            if version is None or isinstance(version, bool) or not isinstance(version, int):
                continue  # absent (= current), or not a number: the model reports BE004
            if version == CURRENT_SCHEMA:
                continue
            pos = located.keys[("schema",)]
            hint = ("upgrade buildenv to read this file" if version > CURRENT_SCHEMA
                    else f"rewrite the file in the current format and set `schema: "
                    f"{CURRENT_SCHEMA}`")
            problems.append(Diagnostic(
                "BE013", f"unsupported schema version {version} (this buildenv supports "
                f"{CURRENT_SCHEMA})", pos.path, pos.line, pos.col, hints=(hint,)))
        return problems

    def _name_problems(self, chain: list[str]) -> list[Diagnostic]:
        problems = []
        for link in chain:
            located = self._load(link)
            written = located.data.get("name")
            if written is None:
                problems.append(Diagnostic("BE005", "missing key 'name' (it must be "
                                           f"'{link}', the file stem)", self.display(link), 1, 1))
            elif written != link:
                pos = located.keys[("name",)]
                problems.append(Diagnostic(
                    "BE006", f"name '{written}' does not match the file name '{link}.yaml'",
                    pos.path, pos.line, pos.col,
                    hints=(f"set `name: {link}` or rename the file to {written}.yaml",)))
        return problems


def _state_uri(project: Project) -> str:
    """The state directory as a dataset uri: where derived datasets and computed label sets
    are written (relative to the data root, like any repository path)."""
    cache_dir = project.config.cache_dir
    return f"file://{cache_dir}" if Path(cache_dir).is_absolute() else cache_dir


def _blame_deletions(problems: list[Diagnostic], deleted: dict[KeyPath, Position],
                     own_file: str) -> list[Diagnostic]:
    """An inherited reference to something a child deleted (`liked: null` under the label's
    columns) is reported at the deletion, with a hint pointing at the reference: the child
    broke it. A problem mentions a deleted key when it quotes its name."""
    if not deleted:
        return problems
    out = []
    for problem in problems:
        hit = next(((path, pos) for path, pos in deleted.items()
                    if pos.path == own_file and problem.is_error and problem.path
                    and problem.path != own_file and f"'{path[-1]}'" in problem.message),
                   None)
        if hit is None:
            out.append(problem)
            continue
        path, pos = hit
        where = f"{problem.path}:{problem.line}:{problem.col}" if problem.line else problem.path
        dotted = ".".join(str(p) for p in path)
        out.append(Diagnostic(
            problem.code, problem.message, pos.path, pos.line, pos.col, problem.severity,
            (f"{dotted} is deleted here (`{path[-1]}: null`), but {where} (inherited) still "
             "refers to it: keep it, or override that reference here",) + problem.hints))
    return out


# --- canonical form ---------------------------------------------------------------------

def canonical_environment(env: Environment) -> dict[str, Any]:
    """The resolved environment without cosmetic fields: what its digest covers.

    Values equal to their defaults are left out (writing `nullable: true` or omitting it is the
    same environment), so a new optional key added to the format does not change the digest of
    environments that do not use it: additive format changes keep every lock valid."""
    return canonical_document(env.model_dump(mode="json", by_alias=True, exclude_defaults=True))


def environment_digest(env: Environment) -> str:
    return digest_json(canonical_environment(env))
