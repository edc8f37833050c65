"""The multiverse build plan: which (training, environment) pairs exist, and the matrix of outcomes.

`pairs` is a pure function of the project configuration and the environment
names, so it has its own unit test; `run_matrix` builds independent pairs in
parallel (the heavy part of each is a training subprocess). Each pair is a progress task
(its phases make the live matrix); `render_matrix` ends with the slowest pairs.
"""

from __future__ import annotations

import fnmatch
import os
from concurrent.futures import ThreadPoolExecutor

from buildenv.compile.build import BuildOptions, BuildOutcome, build_pair
from buildenv.compile.launch import interrupt_trainings, resume_trainings
from buildenv.compile.remote import (
    check_reachable,
    check_resources,
    check_versions,
    ship_repository,
)
from buildenv.core import progress
from buildenv.core.awake import results
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project, TrainingConfig
from buildenv.data.executor import RayExecutor
from buildenv.env.resolve import Multiverse, Resolved

__all__ = ["matrix_json", "pairs", "prepare_ray", "render_matrix", "run_matrix", "slowest"]

RAY_PAIRS = 64  # pairs in flight on Ray unless --jobs says otherwise
SLOW = 1.0  # seconds: faster pairs (cached, failed early) are never "the slowest"


def pairs(trainings: dict[str, TrainingConfig], env_names: list[str]) -> list[tuple[str, str]]:
    out = []
    for training, config in sorted(trainings.items()):
        for env in sorted(env_names):
            if any(fnmatch.fnmatchcase(env, pattern) for pattern in config.environments):
                out.append((training, env))
    return out


def prepare_ray(project: Project, ray: RayExecutor, selected: list[tuple[str, str]],
                all_resolved: dict[str, Resolved]) -> None:
    """Connect to Ray (a cluster gets the repository with the connection) and refuse, before
    anything is scheduled, the pairs it cannot run: BE884, and on a cluster BE885 and BE883."""
    ship_repository(ray, project)
    ray.prepare()
    refused = check_resources(ray, {t: project.training(t)
                                    for t in sorted({t for t, _ in selected})}, project)
    if ray.remote:
        refused += check_versions(ray)
        refused += check_reachable(project, {e: r for e, r in all_resolved.items()
                                             if e in {env for _, env in selected}})
    if refused:
        raise DiagnosticError(refused, 2)


def run_matrix(project: Project, multiverse: Multiverse, selected: list[tuple[str, str]],
               options: BuildOptions, jobs: int | None = None) -> list[BuildOutcome]:
    all_resolved, _ = multiverse.resolve_all()
    for env in {e for _, e in selected}:  # parse everything once, before threads share it
        try:
            multiverse.resolve(env)
        except Exception:
            pass
    if options.ray is not None:  # connect from this thread; refuse what cannot run there
        prepare_ray(project, options.ray, selected, all_resolved)
        # Ray schedules the trainings by their resources; the driver's threads only wait for
        # them (and validate, verify and save around them): many pairs are submitted at once
        workers = max(1, min(len(selected), jobs or RAY_PAIRS))
    else:
        workers = max(1, min(jobs or os.cpu_count() or 1, len(selected) or 1))
    with progress.task("build --all", total=len(selected), unit="pairs") as matrix:
        def one(pair: tuple[str, str]) -> BuildOutcome:
            outcome = build_pair(project, multiverse, pair[0], pair[1], options, all_resolved)
            matrix.advance()
            return outcome

        with ThreadPoolExecutor(workers) as pool:
            try:
                # in slices: a signal reaches this thread at once (`core.awake`)
                return results([pool.submit(one, pair) for pair in selected])
            except BaseException:  # Ctrl-C, SIGTERM: the pool would wait for every training
                if options.ray is not None:
                    options.ray.cancel_all()
                else:  # local trainings run in sessions of their own: Ctrl-C misses them
                    interrupt_trainings()
                try:
                    pool.shutdown(wait=True, cancel_futures=True)
                finally:
                    resume_trainings()
                raise


def render_matrix(outcomes: list[BuildOutcome], quiet: bool = False) -> str:
    """The matrix, why pairs were rebuilt, first errors, the slowest pairs and the counts;
    `quiet`: first errors and the counts only."""
    trainings = sorted({o.training for o in outcomes})
    envs = sorted({o.env for o in outcomes})
    cell = {(o.training, o.env): o for o in outcomes}

    def text(o: BuildOutcome | None) -> str:
        if o is None:
            return "-"
        if o.status == "failed":
            first = o.first_error()
            return f"failed {first.code}" if first else "failed"
        return o.status

    width = max([len(t) for t in trainings] + [8])
    cols = [max(len(e), *(len(text(cell.get((t, e)))) for t in trainings)) for e in envs]
    lines = ["".ljust(width) + "  " + "  ".join(e.ljust(w) for e, w in zip(envs, cols))]
    for t in trainings:
        lines.append(t.ljust(width) + "  " + "  ".join(
            text(cell.get((t, e))).ljust(w) for e, w in zip(envs, cols)))
    failed = [o for o in outcomes if o.status == "failed"]
    rebuilt = [o for o in outcomes if o.status == "built"]
    if quiet:
        lines, rebuilt = [], []
    if rebuilt:
        lines.append("")
        lines.extend(f"built {o.training} @ {o.env}: {o.reason}" for o in rebuilt)
    if failed:
        lines.append("")
        for o in failed:
            first = o.first_error()
            lines.append(f"{o.training} @ {o.env}: " + (first.to_text() if first else "failed"))
    slow = [] if quiet else slowest(outcomes)
    if slow:
        lines += ["", "slowest:"] + [f"  {line}" for line in slow]
    built = sum(o.status == "built" for o in outcomes)
    cached = sum(o.status == "cached" for o in outcomes)
    noun = "pair" if len(outcomes) == 1 else "pairs"
    lines.append(f"\n{len(outcomes)} {noun}: {built} built, {cached} cached, {len(failed)} failed")
    return "\n".join(lines).lstrip("\n")


def slowest(outcomes: list[BuildOutcome], n: int = 3) -> list[str]:
    """`recommender @ prod-2026-09: 61.2 s (train 55.0 s, importance 3.10 s, validate 2.00 s)`
    for the `n` slowest pairs that took at least `SLOW` seconds, with their three longest
    phases."""
    ranked = sorted((o for o in outcomes if o.seconds >= SLOW),
                    key=lambda o: (-o.seconds, o.training, o.env))[:n]
    lines = []
    for o in ranked:
        top = sorted(o.timings.items(), key=lambda kv: -kv[1])[:3]
        where = ", ".join(f"{name} {progress.seconds_text(s)}" for name, s in top)
        lines.append(f"{o.training} @ {o.env}: {progress.seconds_text(o.seconds)}"
                     + (f" ({where})" if where else ""))
    return lines


def matrix_json(outcomes: list[BuildOutcome]) -> dict:
    return {"pairs": [o.to_json() for o in sorted(outcomes, key=lambda o: (o.training, o.env))],
            "summary": {s: sum(o.status == s for o in outcomes)
                        for s in ("built", "cached", "failed")}}
