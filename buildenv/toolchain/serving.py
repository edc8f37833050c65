"""The serving environment of an artifact: exactly what its image installs.

`serving.requirements`, plus what the serving app imports to load the artifact's format
(`pins.SERVING_APP`), resolved with
the versions the model was trained with as constraints (the training's lock, recorded in the
lineage): a pickled model is loaded by the very library versions that pickled it, and nothing
of the training's toolchain comes along that serving did not ask for. Locked with hashes and
installed like a training's environment; the image vendors that environment's distributions.
A serving stack runs on CPUs, so a lock that brings CUDA libraries (PyPI's torch, `xgboost`'s
NCCL) is refused with the CPU alternatives named.
"""

from __future__ import annotations

import platform
import re

from packaging.utils import canonicalize_name

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.env.resolve import Resolved
from buildenv.toolchain.requirements import Wanted, parse_requirement
from buildenv.toolchain.toolchain import Toolchain, resolve_lock

__all__ = ["cuda_packages", "serving_toolchain"]

_CUDA = re.compile(r"^(nvidia-.*|cuda-.*|cupy.*|triton|tensorrt.*|jax-cuda.*)$")


def cuda_packages(packages: dict[str, str]) -> list[str]:
    """The GPU runtime distributions in a lock (a CPU image must hold none)."""
    return sorted(name for name in packages if _CUDA.match(name))


def serving_toolchain(project: Project, res: Resolved, trained_with: dict[str, str],
                      runtime: tuple[str, ...]) -> Toolchain:
    """The locked serving environment of a model trained with `trained_with` (name ->
    version) for `res`, with the serving app's `runtime` for the artifact's format; BE751 when
    it cannot be resolved, BE756 when it holds CUDA."""
    serving = res.env.serving
    assert serving is not None
    wanted: list[Wanted] = []
    for i, text in enumerate(serving.requirements):
        pos = res.where("serving", "requirements", i)
        req = parse_requirement(text)
        wanted.append(Wanted(text, canonicalize_name(req.name), "serving.requirements",
                             pos.path if pos else None, pos.line if pos else None))
    named = {w.name for w in wanted}
    wanted += [Wanted(name, canonicalize_name(name), "the serving app") for name in runtime
               if canonicalize_name(name) not in named]
    pins = [f"{name}=={version}" for name, version in sorted(trained_with.items())
            if "://" not in version]
    try:
        lock = resolve_lock(project, wanted, f"the serving image of environment {res.name}",
                            pins=pins)
    except DiagnosticError as exc:
        raise DiagnosticError([Diagnostic(
            "BE751", f"serving.requirements of {res.name}, with the versions the model was "
            f"trained with, cannot be installed: {d.message}", d.path, d.line, d.col,
            hints=d.hints) for d in exc.diagnostics], exc.exit_code) from None
    cuda = cuda_packages(lock.packages)
    if cuda:
        pos = res.where("serving", "requirements")
        raise DiagnosticError([Diagnostic(
            "BE756", f"the serving environment of {res.name} pulls GPU libraries into a CPU "
            f"image: {', '.join(f'{n} {lock.packages[n]}' for n in cuda)}",
            pos.path if pos else None, pos.line if pos else None,
            hints=("use the CPU builds: `xgboost-cpu` instead of `xgboost`; torch from a CPU "
                   "wheel index or wheelhouse ([tool.buildenv.toolchains] find_links, or "
                   "extra_index_urls with the CPU index)",))], 1)
    return Toolchain("resolve", lock.digest, lock.packages, "serving",
                     platform.python_version(), lock, tuple(wanted))
