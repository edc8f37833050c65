"""The toolchain store: resolved locks and the environments installed from them.

    <store>/resolved/<k[:2]>/<k>.lock    a resolution's lock, by the digest of its inputs
    <store>/envs/<k[:2]>/<k>/            an environment, by the digest of its lock + interpreter
    <store>/runner/<digest>/buildenv     buildenv's source, alone on the runner's path
    <store>/pycache/                     bytecode of what trainings import (PYTHONPYCACHEPREFIX)
    <store>/tmp/, <store>/locks/         environments being built; cross-process mutexes

An environment is built in a temp dir and renamed into place complete (uv makes it
relocatable), under a mutex per environment: of N processes wanting the same new environment,
one builds it and the others wait for it, then reuse it. A process killed while building
leaves only its temp dir, swept once it is gone. Finding a ready environment costs a `stat`.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import AbstractContextManager
from pathlib import Path

from buildenv.core.atomic import atomic_dir, atomic_write_text
from buildenv.core.mutex import mutex, mutex_path, mutex_timeout
from buildenv.toolchain.lockfile import Lock
from buildenv.toolchain.uv import UvSettings, run_uv

__all__ = ["MARKER", "Store"]

MARKER = "buildenv-toolchain.json"  # written last inside the temp dir: the environment is whole
LOCK_NAME = "requirements.lock"
_CREATE_WAIT = 1800.0  # another process may be downloading a large wheel


class Store:
    def __init__(self, root: Path):
        self.root = root

    # --- resolutions ---------------------------------------------------------------------

    def resolved_path(self, input_key: str) -> Path:
        return self.root / "resolved" / input_key[:2] / f"{input_key}.lock"

    def read_resolved(self, input_key: str) -> str | None:
        try:
            return self.resolved_path(input_key).read_text(encoding="utf-8")
        except OSError:
            return None

    def save_resolved(self, input_key: str, text: str) -> None:
        atomic_write_text(self.resolved_path(input_key), text)

    def resolving(self, input_key: str) -> AbstractContextManager[None]:
        """Mutex of one resolution: concurrent builds resolve a new requirement set once."""
        return mutex(mutex_path(self.root, "resolve", input_key),
                     "another process resolving the same requirements",
                     mutex_timeout(_CREATE_WAIT))

    # --- environments --------------------------------------------------------------------

    def env_path(self, env_key: str) -> Path:
        return self.root / "envs" / env_key[:2] / env_key

    @staticmethod
    def python(env: Path) -> Path:
        return env / "bin" / "python"

    def ready(self, env_key: str) -> Path | None:
        env = self.env_path(env_key)
        return env if (env / MARKER).is_file() else None

    def ensure_env(self, env_key: str, lock: Lock, base_python: str,
                   settings: UvSettings) -> tuple[Path, bool]:
        """The environment for `lock` (created if missing) and whether this call created it.
        Raises UvFailure when uv cannot create it; nothing is left behind then."""
        found = self.ready(env_key)
        if found is not None:
            return found, False
        with mutex(mutex_path(self.root, "env", env_key),
                   f"the training environment {env_key[:12]} being created by another process",
                   mutex_timeout(_CREATE_WAIT)):
            found = self.ready(env_key)
            if found is not None:
                return found, False
            final = self.env_path(env_key)
            with atomic_dir(final, self.root / "tmp") as tmp:
                run_uv(["venv", "--no-config", "--quiet", "--relocatable", "--python",
                        base_python, str(tmp)], settings)
                (tmp / LOCK_NAME).write_text(lock.text, encoding="utf-8")
                run_uv(["pip", "sync", "--no-config", "--quiet", "--require-hashes",
                        "--python", str(self.python(tmp)), *settings.index_args(),
                        str(tmp / LOCK_NAME)], settings)
                (tmp / MARKER).write_text(json.dumps(
                    {"lock": lock.digest, "packages": lock.packages, "python": base_python},
                    indent=2, sort_keys=True) + "\n", encoding="utf-8")
            return final, True

    # --- the runner's path and bytecode ----------------------------------------------------

    def runner_path(self, package_dir: Path) -> Path:
        """A directory holding only `buildenv` (a link to `package_dir`): the runner imports
        buildenv from it and nothing else of the interpreter running buildenv."""
        digest = hashlib.sha256(str(package_dir).encode()).hexdigest()[:16]
        home = self.root / "runner" / digest
        link = home / "buildenv"
        try:
            if link.is_symlink() and Path(os.readlink(link)) == package_dir:
                return home
        except OSError:
            pass
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".buildenv.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(package_dir, tmp, target_is_directory=True)
        os.replace(tmp, link)
        return home

    @property
    def pycache(self) -> Path:
        return self.root / "pycache"
