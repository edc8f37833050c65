"""The `buildenv` command line (SPEC §6).

Thin: each command parses flags, calls the library, and renders diagnostics.
Exit codes: 0 success, 1 the command ran and found errors, 2 usage or
configuration error, 3 an internal error (a bug: please report it).
Heavy libraries (pandas, sklearn, mlflow) are imported inside the commands
that need them, so `envs`, `check` and no-op builds start fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer

from . import __version__
from .diagnostics import Diagnostic, DiagnosticError, Severity, render, sort_diagnostics

app = typer.Typer(
    name="buildenv",
    help="Compile ML training code against declarative, locked build environments.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


class DataFormat(str, Enum):
    yaml = "yaml"
    json = "json"


RootOpt = typer.Option(None, "--root", help="Repository root (default: nearest parent with "
                       "pyproject.toml or environments/; env BUILDENV_ROOT).")
FormatOpt = typer.Option(Format.text, "--format", help="Diagnostics as text, json or sarif.")


def _project(root: Optional[Path], data_root: Optional[Path] = None):
    from .project import Project

    return Project.discover(root, data_root)


def _emit(diagnostics: list[Diagnostic], fmt: Format, stream=None) -> None:
    stream = stream or (sys.stdout if fmt is not Format.text else sys.stderr)
    if diagnostics or fmt is not Format.text:
        print(render(sort_diagnostics(diagnostics), fmt.value), file=stream)


def command(func: Callable) -> Callable:
    """Turn DiagnosticError into rendered diagnostics + exit code; never a traceback for input."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        fmt = kwargs.get("fmt", Format.text)
        if not isinstance(fmt, Format):
            fmt = Format.text
        try:
            return func(*args, **kwargs)
        except DiagnosticError as exc:
            _emit(exc.diagnostics, fmt)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except BrokenPipeError:  # `buildenv schema | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # a bug, not bad input
            if os.environ.get("BUILDENV_DEBUG"):
                raise
            print(f"buildenv: internal error: {type(exc).__name__}: {exc}\n"
                  "  hint: rerun with BUILDENV_DEBUG=1 for the traceback, and please report it",
                  file=sys.stderr)
            raise typer.Exit(3) from None

    return wrapper


def _finish(diagnostics: list[Diagnostic], fmt: Format) -> None:
    _emit(diagnostics, fmt)
    if any(d.severity is Severity.ERROR for d in diagnostics):
        raise typer.Exit(1)


# --- environments ------------------------------------------------------------------------

@app.command("envs")
@command
def envs_cmd(root: Optional[Path] = RootOpt,
             fmt: DataFormat = typer.Option(DataFormat.yaml, "--format",
                                            help="table (yaml) or json")) -> None:
    """List environments: name, parent, datasets, lock state."""
    from .lock import lock_state
    from .resolve import Multiverse

    mv = Multiverse(_project(root))
    resolved, problems = mv.resolve_all()
    rows = []
    for name in mv.names():
        res = resolved.get(name)
        if res is None:
            rows.append({"name": name, "extends": None, "datasets": [], "lock": "invalid",
                         "serving": None})
            continue
        rows.append({"name": name, "extends": res.env.extends,
                     "datasets": sorted(res.env.datasets), "lock": lock_state(mv, res),
                     "serving": res.env.serving.stack if res.env.serving else None})
    if fmt is DataFormat.json:
        print(json.dumps({"environments": rows}, indent=2))
    else:
        width = max([len(r["name"]) for r in rows] + [4])
        pwidth = max([len(r["extends"] or "-") for r in rows] + [7])
        print(f"{'NAME':<{width}}  {'EXTENDS':<{pwidth}}  {'LOCK':<8}  DATASETS")
        for r in rows:
            print(f"{r['name']:<{width}}  {r['extends'] or '-':<{pwidth}}  {r['lock']:<8}  "
                  f"{', '.join(r['datasets'])}")
    _emit(problems, Format.text)
    if any(p.is_error for p in problems):
        raise typer.Exit(2)  # an invalid environment file is a configuration error


@app.command("show")
@command
def show_cmd(env: str = typer.Argument(..., help="Environment name."),
             root: Optional[Path] = RootOpt,
             fmt: DataFormat = typer.Option(DataFormat.yaml, "--format"),
             explain: bool = typer.Option(False, "--explain",
                                          help="Annotate each value with the file:line it "
                                          "came from.")) -> None:
    """Print the resolved environment (after `extends`)."""
    from .explain import explained_yaml, resolved_document
    from .resolve import Multiverse

    mv = Multiverse(_project(root))
    res = mv.resolve(env)
    if explain:
        print(explained_yaml(res), end="")
    elif fmt is DataFormat.json:
        print(json.dumps(resolved_document(res), indent=2))
    else:
        import yaml

        print(yaml.safe_dump(resolved_document(res), sort_keys=False, allow_unicode=True), end="")


@app.command("diff")
@command
def diff_cmd(env_a: str = typer.Argument(..., help="First environment (shown as -)."),
             env_b: str = typer.Argument(..., help="Second environment (shown as +)."),
             root: Optional[Path] = RootOpt,
             fmt: DataFormat = typer.Option(DataFormat.yaml, "--format")) -> None:
    """What differs between two resolved environments."""
    from .explain import diff_environments
    from .resolve import Multiverse

    mv = Multiverse(_project(root))
    a, b = mv.resolve(env_a), mv.resolve(env_b)
    changes = diff_environments(a, b)
    if fmt is DataFormat.json:
        print(json.dumps({"a": env_a, "b": env_b, "changes": changes}, indent=2, default=str))
        return
    if not changes:
        print(f"{env_a} and {env_b} resolve to the same environment")
        return
    print(f"--- {env_a}\n+++ {env_b}")
    for change in changes:
        path = change["path"]
        if change["kind"] == "added":
            print(f"+ {path}: {_short(change['b'])}")
        elif change["kind"] == "removed":
            print(f"- {path}: {_short(change['a'])}")
        else:
            print(f"~ {path}: {_short(change['a'])} -> {_short(change['b'])}")


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


@app.command("lock")
@command
def lock_cmd(envs: Optional[list[str]] = typer.Argument(None, help="Environments (default: all)."),
             root: Optional[Path] = RootOpt,
             algorithm: str = typer.Option("sha256", "--algorithm",
                                           help="sha256 (default) or blake3"),
             check: bool = typer.Option(False, "--check", help="Only report locks that are "
                                        "missing or stale; write nothing."),
             fmt: Format = FormatOpt) -> None:
    """Pin every dataset's content digest in environments/<name>.lock.json."""
    from .lock import check_lock, lock_environments
    from .resolve import Multiverse

    if algorithm not in ("sha256", "blake3"):
        raise DiagnosticError([Diagnostic("BE004", f"unknown digest algorithm '{algorithm}'",
                                          hints=("use sha256 or blake3",))], 2)
    mv = Multiverse(_project(root))
    names = list(envs or mv.names())
    for name in names:
        mv.require(name)
    if check:
        resolved, problems = mv.resolve_all(names)
        config_error = any(p.is_error for p in problems)  # invalid environment files
        for res in resolved.values():
            try:
                problems.extend(check_lock(mv, res)[1])
            except DiagnosticError as exc:  # unreadable lock file (BE054, BE013)
                problems.extend(exc.diagnostics)
                config_error = True
        if not problems and fmt is Format.text:
            print(f"{len(resolved)} lock(s) up to date")
        _emit(problems, fmt)
        if any(p.is_error for p in problems):
            raise typer.Exit(2 if config_error else 1)
        return
    results, problems = lock_environments(mv, names, algorithm)
    if fmt is Format.text:
        for name, lock, changed in results:
            rows = sum(d.rows for d in lock.datasets.values())
            state = "updated" if changed else "unchanged"
            print(f"{name}: {state} ({len(lock.datasets)} datasets, {rows} rows)")
    _emit(problems, fmt)
    if any(p.is_error for p in problems):
        # an invalid environment file is a configuration error (2); unreadable data is 1
        raise typer.Exit(2 if any(p.is_error and p.code != "BE053" for p in problems) else 1)


@app.command("validate")
@command
def validate_cmd(env: str = typer.Argument(..., help="Environment name."),
                 dataset: Optional[list[str]] = typer.Option(None, "--dataset",
                                                             help="Only these datasets."),
                 root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Check every dataset against its declared columns."""
    from .resolve import Multiverse
    from .validate import validate_env

    mv = Multiverse(_project(root))
    res = mv.resolve(env)
    for name in dataset or []:
        if name not in res.env.datasets:
            from .diagnostics import did_you_mean

            hint = did_you_mean(name, res.env.datasets)
            raise DiagnosticError([Diagnostic("BE009", f"unknown dataset '{name}' in "
                                              f"environment {env}",
                                              hints=(hint,) if hint else ())], 2)
    problems = validate_env(res, mv.project, datasets=list(dataset) if dataset else None)
    if not problems and fmt is Format.text:
        print(f"{env}: {len(dataset or res.env.datasets)} dataset(s) valid")
    _finish(problems, fmt)


@app.command("check")
@command
def check_cmd(training: str = typer.Argument(..., help="Training name from pyproject.toml."),
              env: str = typer.Option(..., "--env", help="Environment name."),
              root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Static checks only: no data read, no training (fast)."""
    from .check import check_training
    from .resolve import Multiverse

    project = _project(root)
    config = project.training(training)
    mv = Multiverse(project)
    problems = check_training(project, training, config, mv.resolve(env))
    if not any(p.is_error for p in problems) and fmt is Format.text:
        print(f"{training} @ {env}: static checks passed")
    _finish(problems, fmt)


@app.command("build")
@command
def build_cmd(training: Optional[str] = typer.Argument(None, help="Training name."),
              env: Optional[str] = typer.Option(None, "--env", help="Environment name."),
              all_: bool = typer.Option(False, "--all", help="Every (training, environment) "
                                        "pair of the multiverse."),
              out: Optional[Path] = typer.Option(None, "--out", help="Artifact directory "
                                                 "(default dist/<training>/<env>)."),
              register: bool = typer.Option(True, "--register/--no-register",
                                            help="Log and register in MLflow."),
              cache: bool = typer.Option(True, "--cache/--no-cache",
                                         help="Use the content-addressed build cache."),
              jobs: Optional[int] = typer.Option(None, "--jobs", "-j",
                                                 help="Parallel builds (default: cores)."),
              matrix_out: Optional[Path] = typer.Option(None, "--matrix-json",
                                                        help="Where --all writes the matrix "
                                                        "(default dist/matrix.json)."),
              data_root: Optional[Path] = typer.Option(None, "--data-root",
                                                       help="Where relative dataset uris "
                                                       "resolve (default: the root)."),
              timeout: Optional[float] = typer.Option(None, "--timeout",
                                                      help="Training time limit, seconds."),
              root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Compile: check, validate, train, verify, emit (and register)."""
    from .build import BuildOptions, build_pair
    from .fsutil import atomic_write_text
    from .plan import matrix_json, pairs, render_matrix, run_matrix
    from .resolve import Multiverse

    project = _project(root, data_root)
    mv = Multiverse(project)
    options = BuildOptions(out=out, register=register, use_cache=cache, timeout=timeout)
    if all_:
        if training or env or out:
            raise DiagnosticError([Diagnostic("BE004", "--all takes no TRAINING, --env or "
                                              "--out")], 2)
        selected = pairs(project.trainings, mv.names())
        outcomes = run_matrix(project, mv, selected, options, jobs)
        payload = matrix_json(outcomes)
        target = matrix_out or project.root / "dist" / "matrix.json"
        atomic_write_text(target, json.dumps(payload, indent=2) + "\n")
        if fmt is Format.text:
            print(render_matrix(outcomes))
        else:
            _emit([d for o in outcomes for d in o.diagnostics], fmt)
        if any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)
        return
    if not training or not env:
        raise DiagnosticError([Diagnostic("BE004", "build needs TRAINING and --env ENV, or "
                                          "--all")], 2)
    project.training(training)
    mv.require(env)
    outcome = build_pair(project, mv, training, env, options)
    if fmt is Format.text:
        if outcome.status != "failed":
            where = project.rel(outcome.artifact) if outcome.artifact else "?"
            why = f" ({outcome.reason})" if outcome.reason else ""
            reg = outcome.registered
            reg_text = f", registered {training} v{reg['version']}" if reg else ""
            print(f"{training} @ {env}: {outcome.status}{why} -> {where}{reg_text}")
    _finish(outcome.diagnostics, fmt)
    if outcome.status == "failed":
        raise typer.Exit(1)


@app.command("promote")
@command
def promote_cmd(training: str = typer.Argument(..., help="Training name."),
                env: str = typer.Option(..., "--env", help="Environment name."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Evaluate the gates and "
                                             "print the comparison; move nothing."),
                root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Gate the built candidate against `<env>-champion` on the same holdout, then promote."""
    from .promote import alias_name, evaluate, promote
    from .resolve import Multiverse

    project = _project(root)
    project.training(training)
    res = Multiverse(project).resolve(env)
    ev = evaluate(project, res, training)
    if fmt is Format.json:
        print(json.dumps({"evaluation": ev.to_json(), "dry_run": dry_run}, indent=2))
    else:
        print(ev.table())
    _emit(ev.diagnostics, Format.text if fmt is Format.json else fmt, sys.stderr)
    if not ev.passed:
        raise typer.Exit(1)
    if ev.already_champion:
        print(f"{training} v{ev.candidate.version} is already {alias_name(env)}",
              file=sys.stderr)
    elif dry_run:
        print(f"dry run: would move {alias_name(env)} to v{ev.candidate.version}",
              file=sys.stderr)
    else:
        seq = promote(project, ev)
        before = f"v{ev.champion.version}" if ev.champion else "unset"
        print(f"{alias_name(env)}: {before} -> v{ev.candidate.version} (history #{seq})",
              file=sys.stderr)


@app.command("history")
@command
def history_cmd(training: str = typer.Argument(..., help="Training name."),
                env: str = typer.Option(..., "--env", help="Environment name."),
                root: Optional[Path] = RootOpt,
                fmt: DataFormat = typer.Option(DataFormat.yaml, "--format",
                                               help="table (yaml) or json")) -> None:
    """Past champions of `<env>-champion`, oldest first, with lineage."""
    from .promote import history, render_history

    project = _project(root)
    project.training(training)
    data = history(project, training, env)
    print(json.dumps(data, indent=2) if fmt is DataFormat.json else render_history(data))


@app.command("rollback")
@command
def rollback_cmd(training: str = typer.Argument(..., help="Training name."),
                 env: str = typer.Option(..., "--env", help="Environment name."),
                 dry_run: bool = typer.Option(False, "--dry-run", help="Say what would move."),
                 root: Optional[Path] = RootOpt) -> None:
    """Move `<env>-champion` back to the previous champion (no gates: an emergency lever)."""
    from .promote import alias_name, rollback

    project = _project(root)
    project.training(training)
    result = rollback(project, training, env, dry_run)
    verb = "would move" if dry_run else "moved"
    now = f"v{result['from']}" if result["from"] else "unset"
    print(f"{alias_name(env)}: {verb} {now} -> v{result['to']}")


@app.command("retrain")
@command
def retrain_cmd(env: str = typer.Argument(..., help="Environment name."),
                dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset whose "
                                                      "new version is at --uri."),
                uri: Optional[str] = typer.Option(None, "--uri", help="New uri of --dataset: "
                                                  "written into the environment file."),
                promote: bool = typer.Option(False, "--promote", help="Move `<env>-champion` "
                                             "when every gate passes."),
                events: Optional[Path] = typer.Option(None, "--events", help="Append each "
                                                      "step's outcome to this JSON-lines file."),
                root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """For cron/CI: new data -> validate, drift, relock, rebuild, gate (and promote).

    A stop (failed data check, build or gate) exits 1 and leaves the lock, dist/ and the
    aliases as they were.
    """
    from .retrain import RetrainOptions, retrain

    project = _project(root)
    result = retrain(project, env, RetrainOptions(dataset, uri, promote, events))
    if fmt is Format.text:
        for event in result.events:
            who = f" {event['training']}" if event.get("training") else ""
            first = (event.get("message") or "").splitlines()[:1]
            print(f"[{event['step']}{who}] {event['status']}" + (f": {first[0]}" if first
                                                                  else ""))
    _emit(result.diagnostics, fmt, sys.stderr if fmt is Format.text else None)
    raise typer.Exit(result.exit_code)


@app.command("drift")
@command
def drift_cmd(env: str = typer.Argument(..., help="Environment whose locked version is the "
                                        "baseline."),
              dataset: str = typer.Option(..., "--dataset", help="Dataset to compare."),
              against: Optional[str] = typer.Option(None, "--against", help="Candidate data "
                                                    "(uri like a dataset's; csv by extension)."),
              against_lock: Optional[str] = typer.Option(None, "--against-lock", help="Compare "
                                                         "with this environment's locked "
                                                         "version instead."),
              stats: Optional[Path] = typer.Option(None, "--stats", help="Statistics JSON "
                                                   "(default .buildenv/drift/<env>/"
                                                   "<dataset>-<digest12>.json)."),
              html: Optional[Path] = typer.Option(None, "--html", help="Also write a "
                                                  "self-contained HTML report."),
              all_: bool = typer.Option(False, "--all", help="Show suppressed alerts too."),
              root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Drift between the locked version of a dataset and a candidate, with actionable alerts."""
    from .drift import run_drift, write_outputs
    from .drift_report import render

    project = _project(root)
    result = run_drift(project, env, dataset, against=against, against_lock=against_lock)
    write_outputs(result, project, stats, html)
    print(render(result, fmt.value, show_all=all_))
    raise typer.Exit(result.exit_code)


@app.command("image")
@command
def image_cmd(training: str = typer.Argument(..., help="Training name."),
              env: str = typer.Option(..., "--env", help="Environment name."),
              out: Optional[Path] = typer.Option(None, "--out", help="Build context directory "
                                                 "(default .buildenv/image/<training>/<env>)."),
              oci: Optional[Path] = typer.Option(None, "--oci", help="Write an OCI image archive "
                                                 "here, without any daemon (needs "
                                                 "--base-rootfs)."),
              base_rootfs: Optional[Path] = typer.Option(None, "--base-rootfs", help="Root "
                                                         "filesystem tarball: the OCI base "
                                                         "layer."),
              base_image: Optional[str] = typer.Option(None, "--base-image", help="FROM image "
                                                       "of the Docker build (default "
                                                       "python:<X.Y>-slim-bookworm)."),
              tag: Optional[str] = typer.Option(None, "--tag", help="Image tag (default "
                                                "buildenv/<training>:<env>)."),
              docker: Optional[bool] = typer.Option(None, "--docker/--no-docker",
                                                    help="Build with the Docker daemon "
                                                    "(default: when one is reachable and "
                                                    "--oci is not given)."),
              root: Optional[Path] = RootOpt) -> None:
    """A serving image: Docker build context, daemon build, and/or reproducible OCI archive."""
    from .image import (build_docker, check_base_rootfs, docker_client, host_python,
                        write_context, write_oci)
    from .resolve import Multiverse

    project = _project(root)
    project.training(training)
    res = Multiverse(project).resolve(env)
    if oci is not None and base_rootfs is None:
        raise DiagnosticError([Diagnostic("BE004", "--oci needs --base-rootfs TAR (the base "
                                          "layer)")], 2)
    if base_rootfs is not None:
        check_base_rootfs(base_rootfs, host_python())  # before minutes of copying
    ctx = write_context(project, res, training, out)
    print(f"context: {project.rel(ctx.path)} (python {ctx.python}, "
          f"{len(ctx.packages)} vendored packages)")
    name = tag or f"buildenv/{training}:{env}"
    if oci is not None:
        assert base_rootfs is not None
        result = write_oci(project, ctx, base_rootfs, oci, name.rsplit(":", 1)[-1])
        print(f"oci: {oci} manifest {result['manifest']}")
    want_docker = docker if docker is not None else oci is None
    if want_docker:
        client = docker_client(required=docker is True)
        if client is None:
            print("docker: no daemon reachable; wrote the context only (`docker build` it, or "
                  "use --oci)", file=sys.stderr)
        else:
            image_id = build_docker(client, ctx, name, base_image)
            print(f"docker: {name} {image_id}")


@app.command("schema")
@command
def schema_cmd(full: bool = typer.Option(False, "--resolved", help="Schema of a resolved "
                                         "environment (no partial `extends` files).")) -> None:
    """Print the JSON Schema of environment files."""
    from .spec import file_json_schema, json_schema

    print(json.dumps(json_schema() if full else file_json_schema(), indent=2))


@app.command("explain")
@command
def explain_cmd(code: str = typer.Argument(..., help="A diagnostic code, e.g. BE102.")) -> None:
    """What a diagnostic code means and how to fix it."""
    from .codes import CODES, explain

    text = explain(code)
    if text is None:
        from .diagnostics import did_you_mean

        hint = did_you_mean(code.upper(), CODES) or "codes look like BE102"
        raise DiagnosticError([Diagnostic("BE004", f"unknown code '{code}'", hints=(hint,))], 2)
    print(text)


@app.command("version")
def version_cmd() -> None:
    """Print buildenv's version."""
    print(__version__)


def main() -> None:
    app(prog_name="buildenv")


if __name__ == "__main__":
    main()
