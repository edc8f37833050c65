"""What the sandboxed training sees of the filesystem (`View`), whatever enforces it.

Readable trees: the system (`/usr`, `/etc`, `/sys`, ...), everything the runner's interpreter
needs (its prefixes and `sys.path`, asked of that interpreter itself, so a per-training venv
is covered like the build's own), buildenv's package, the repository, and the training's extra
read-only paths. Hidden inside them: every dataset file, partitioned dataset and label export
of this environment and of every lock in the environments directory (the largest directory
around each that holds none of the training's code), the environments directory, the state
directories, credentials in the home directory and the machine's secrets in `/etc`.
Writable: the build's output directory for the model and a private work directory (HOME,
TMPDIR, the request and result files). Nothing else exists for the training.
"""

from __future__ import annotations

import functools
import json
import os
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import buildenv
from buildenv.core.code import repo_imports
from buildenv.core.project import Project, TrainingConfig
from buildenv.data.storage import locate
from buildenv.env.spec import Environment

__all__ = ["SYSTEM_TREES", "View", "filesystem_view", "interpreter_roots", "is_under"]

SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh",
            "/etc/ssl/private", "/etc/sudoers", "/etc/sudoers.d")
_CREDENTIALS = (".ssh", ".aws", ".azure", ".config/gcloud", ".docker", ".kube", ".gnupg",
                ".netrc", ".git-credentials", ".pypirc", ".config/gh")


def is_under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


@dataclass(frozen=True)
class View:
    read: tuple[str, ...]
    """Readable trees outside any hidden path, shallow first."""
    hidden: tuple[str, ...]
    """Paths inside readable trees that the training never sees."""
    inner: tuple[str, ...]
    """Readable trees inside hidden paths (an interpreter in the state directory)."""
    write: tuple[str, ...]
    """Writable trees: the output directory and the private work directory."""
    listable: tuple[str, ...] = ()
    """Directories whose names (not files) the runner lists: where it imports buildenv from."""
    unreachable: tuple[str, ...] = ()
    """Data outside every readable tree: absent anyway, named so that reports say "data"."""
    private: tuple[str, ...] = ()
    """The hidden paths that are not data: credentials, the machine's secrets."""

    def data(self) -> tuple[str, ...]:
        """Every hidden or unreachable path that holds data (what BE322 says to read through
        ctx)."""
        return tuple(h for h in self.hidden if h not in self.private) + self.unreachable

    def readable(self, path: str) -> bool:
        """Whether `path` (absolute, normalised) is visible to the training."""
        if any(is_under(path, tree) for tree in self.inner + self.write):
            return True
        return any(is_under(path, tree) for tree in self.read) and \
            not any(is_under(path, hole) for hole in self.hidden)


def filesystem_view(project: Project, env: Environment, config: TrainingConfig,
                    python: str, read_only: tuple[str, ...], write: tuple[Path, ...],
                    runtime_extra: tuple[str, ...] = (), modules: tuple[str, ...] = ()
                    ) -> View:
    """`modules`: more user code than the training's module (labeling functions' modules),
    kept out of the hidden data directories like it."""
    system = [p for p in SYSTEM_TREES if os.path.lexists(p)]
    runtime = [*interpreter_roots(python), _package(), *runtime_extra]
    broad = [*system, str(project.root.resolve()), *read_only]
    holes = _data_holes(project, env, (config.module_path, *modules))
    private = _private_holes()
    hidden = [h for h in _dedupe(holes + private)
              if any(is_under(h, tree) for tree in broad + runtime)]

    def inside(tree: str) -> bool:
        return any(is_under(tree, hole) for hole in hidden)

    read = _dedupe([t for t in broad + runtime if not inside(t)])
    inner = _dedupe([t for t in runtime if inside(t) and t not in hidden])
    return View(tuple(read), tuple(hidden), tuple(inner), tuple(str(p) for p in write),
                (os.path.dirname(_package()),), tuple(h for h in holes if h not in hidden),
                tuple(h for h in hidden if h in private))


def _package() -> str:
    """buildenv's package directory (the runner imports this very buildenv)."""
    return str(Path(buildenv.__file__).resolve().parent)


def _dedupe(paths: list[str]) -> list[str]:
    """Normalised, existing, nested ones dropped, shallow first."""
    out: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths if p and os.path.lexists(p)},
                       key=lambda p: (p.count("/"), p)):
        if not any(is_under(path, kept) for kept in out):
            out.append(path)
    return out


def _data_holes(project: Project, env: Environment, modules: tuple[str, ...]) -> list[str]:
    state = {str(project.state_dir.resolve()), str(project.data_state_dir.resolve())}
    environments = project.environments_dir.resolve()
    holes = set(state)
    if environments != project.root.resolve():
        holes.add(str(environments))
    code = [str(p.resolve()) for m in modules for p in repo_imports(project, m)]
    for uri in _data_uris(project, env):
        location = locate(uri, project)
        if location.local is not None:
            holes.add(_largest_without_code(Path(location.local), project.data_base.resolve(),
                                            code))
    return sorted(holes)


def _data_uris(project: Project, env: Environment) -> list[str]:
    """Uris of this environment's data and label files, and those every lock pins."""
    uris = [spec.uri for spec in env.datasets.values()]
    for label_set in env.labels.values():
        uris += [label_set.uri, *(r.mapping for r in label_set.reuse if r.mapping)]
    for lock in sorted(project.environments_dir.glob("*.lock.json")):
        try:
            data = json.loads(lock.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for section in ("datasets", "labels"):
            for entry in (data.get(section) or {}).values():
                if isinstance(entry, dict) and isinstance(entry.get("uri"), str):
                    uris.append(entry["uri"])
                    uris += [m for m in entry.get("mappings") or {} if isinstance(m, str)]
    return uris


def _largest_without_code(path: Path, base: Path, code: list[str]) -> str:
    """The largest directory around a data file, below `base`, holding none of `code`; the file
    itself when its own directory holds code. Outside `base`: the path itself."""
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        return str(path)
    for depth in range(1, len(parts) + 1):
        candidate = str(base.joinpath(*parts[:depth]))
        if not any(is_under(c, candidate) for c in code):
            return candidate
    return str(path)


def _private_holes() -> list[str]:
    home = os.path.expanduser("~")
    return [*_SECRETS, *(os.path.join(home, name) for name in _CREDENTIALS)]


_PROBE = """import json, site, sys
print(json.dumps({"paths": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                            *sys.path], "site": site.getsitepackages()}))
"""


@functools.cache
def interpreter_roots(python: str) -> tuple[str, ...]:
    """Trees the interpreter `python` reads to start and import its packages: its prefixes and
    `sys.path` (as written and resolved), and the targets of symlinks in its site-packages
    (Pants' venvs link each package into a shared store: one common tree). The build's own
    interpreter answers in-process; another one (a per-training venv) is asked once."""
    # Compared as written: a virtualenv's python links to its base interpreter, yet starts with
    # other prefixes (its pyvenv.cfg), so two venvs of one base are different interpreters.
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
        site_dirs = site.getsitepackages()
    else:
        found = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True,
                               timeout=60, check=True, env={"PATH": os.environ.get("PATH", "")})
        data = json.loads(found.stdout)
        paths, site_dirs = data["paths"], data["site"]
    package_parent = os.path.dirname(_package())  # buildenv itself is bound on its own
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
              if p and os.path.realpath(p) != package_parent]
    cwd = os.getcwd()
    roots = []
    for path in paths:
        if path and os.path.abspath(path) != cwd:
            roots += [os.path.abspath(path), os.path.realpath(path)]
    links = []
    for folder in site_dirs:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        links += [os.path.realpath(e.path) for e in entries if e.is_symlink()]
    links = [p for p in links if os.path.exists(p)]
    if links:
        common = os.path.commonpath(links)
        roots += [common] if common.count("/") >= 3 else links
    roots.append(os.path.dirname(os.path.abspath(python)))
    return tuple(_dedupe(roots))
