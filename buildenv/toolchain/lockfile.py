"""A hashed requirements lock: what `uv pip compile --generate-hashes` writes (and pip-tools).

One pinned distribution per logical line (`name==version \\` followed by `--hash=` lines);
comments, blank lines and resolver options are skipped. The lock's identity is the digest of
its bytes: the same bytes install the same files (every artifact's hash is in them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["Lock", "LockError", "parse_lock"]


class LockError(ValueError):
    """A line that is not a pinned requirement; `line` is 1-based."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Lock:
    text: str
    packages: dict[str, str]  # canonical name -> version (or the URL of a direct reference)
    names: dict[str, str]  # canonical name -> the name as written
    hashed: bool  # every entry carries at least one --hash

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def version(self, name: str) -> str | None:
        return self.packages.get(canonicalize_name(name))

    def pins(self) -> list[str]:
        """`name==version` per entry, sorted: constraints that reproduce these versions."""
        return [f"{self.names[k]}=={v}" for k, v in sorted(self.packages.items())
                if "://" not in v]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    current, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not current:
            start = number
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append((start, current.strip()))
        current = ""
    if current.strip():
        out.append((start, current.strip()))
    return out


def parse_lock(text: str) -> Lock:
    packages: dict[str, str] = {}
    names: dict[str, str] = {}
    hashed = True
    for number, line in _logical_lines(text):
        if line.startswith("-"):
            if line.startswith(("-e", "--editable")):
                raise LockError("an editable requirement cannot be locked by hash", number)
            continue  # --index-url, --find-links, ...: resolver options
        spec, _, options = line.partition(" --")
        try:
            req = Requirement(spec.strip())
        except InvalidRequirement as exc:
            raise LockError(f"not a requirement: {exc}", number) from None
        name = canonicalize_name(req.name)
        if req.url:
            version = req.url
        else:
            exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
            if len(exact) != 1 or "*" in exact[0]:
                raise LockError(f"'{spec.strip()}' is not pinned to one version (name==version)",
                                number)
            version = exact[0]
        if name in packages and packages[name] != version:
            raise LockError(f"{req.name} is pinned twice ({packages[name]} and {version})",
                            number)
        packages[name], names[name] = version, req.name
        hashed = hashed and "hash=" in options
    return Lock(text, dict(sorted(packages.items())), names, hashed and bool(packages))
