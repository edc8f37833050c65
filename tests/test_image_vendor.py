"""Which files `buildenv image` vendors for an installed distribution.

Pants runs buildenv (and its tests) in PEX venvs, whose RECORD lists only the .dist-info
files and whose packages are symlinks into each wheel's chroot; a plain venv lists every file
in RECORD. Both must vendor the package's code, or the image cannot unpickle the model.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from buildenv.release.image_runtime import dist_files

INFO = "demo_pkg-1.0.dist-info"


def _write_info(info: Path, record: list[str]) -> None:
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in record))


def _write_code(root: Path) -> None:
    (root / "demo" / "sub").mkdir(parents=True)
    (root / "demo" / "__init__.py").write_text("X = 1\n")
    (root / "demo" / "sub" / "core.py").write_text("Y = 2\n")
    (root / "demo_single.py").write_text("Z = 3\n")


def _names(site: Path) -> list[str]:
    return sorted(rel for rel, path in dist_files(metadata.PathDistribution(site / INFO))
                  if not rel.startswith(INFO))


def test_a_plain_venv_vendors_what_record_lists(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    _write_code(site)
    code = ["demo/__init__.py", "demo/sub/core.py", "demo_single.py"]
    _write_info(site / INFO, [f"{INFO}/METADATA", f"{INFO}/RECORD", *code])
    assert _names(site) == code


def test_a_pex_venv_vendors_the_symlinked_packages_of_the_wheel_chroot(tmp_path: Path) -> None:
    chroot = tmp_path / "installed_wheels" / "abc" / "demo_pkg-1.0-py3-none-any.whl"
    _write_code(chroot)
    _write_info(chroot / INFO, [])
    other = tmp_path / "installed_wheels" / "def" / "other-2.0-py3-none-any.whl"
    (other / "other").mkdir(parents=True)
    (other / "other" / "__init__.py").write_text("")
    (other / "other-2.0.dist-info").mkdir()

    site = tmp_path / "venv" / "site-packages"
    _write_info(site / INFO, [f"{INFO}/METADATA", f"{INFO}/RECORD"])  # what PEX rewrites
    for name in ("demo", "demo_single.py"):
        os.symlink(os.path.relpath(chroot / name, site), site / name)
    os.symlink(os.path.relpath(other / "other", site), site / "other")  # another dist's
    assert _names(site) == ["demo/__init__.py", "demo/sub/core.py", "demo_single.py"]
