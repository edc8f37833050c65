"""Commands that compile trainings: check, toolchain, build, register, ops, and `ui` for
their MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from buildenv.cli.application import (
    Format,
    FormatOpt,
    ProgressOpt,
    QuietOpt,
    RootOpt,
    app,
    command,
    emit,
    finish,
    open_project,
    progress_shown,
    quieted,
)
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, sort_diagnostics
from buildenv.core.extras import require

if TYPE_CHECKING:
    from buildenv.compile.isolation import Support

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.


@app.command("check")
@command
def check_cmd(training: str = typer.Argument(..., help="Training name from pyproject.toml."),
              env: str = typer.Option(..., "--env", help="Environment name."),
              root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Static checks only: no data read, no training (fast)."""
    from buildenv.compile.check import check_training
    from buildenv.env.resolve import Multiverse

    project = open_project(root)
    config = project.training(training)
    multiverse = Multiverse(project)
    problems = check_training(project, training, config, multiverse.resolve(env))
    if not any(p.is_error for p in problems) and fmt is Format.text:
        print(f"{training} @ {env}: static checks passed")
    finish(problems, fmt)


@app.command("toolchain")
@command
def toolchain_cmd(training: str = typer.Argument(..., help="Training name from pyproject.toml."),
                  env: str = typer.Option(..., "--env", help="Environment name."),
                  write_lock: Optional[Path] = typer.Option(
                      None, "--write-lock", help="Write the training's hashed lock to FILE "
                      "(for its `lock` key)."),
                  upgrade: bool = typer.Option(False, "--upgrade", help="Resolve again, "
                                               "ignoring the stored resolution."),
                  create: bool = typer.Option(False, "--create", help="Also create the "
                                              "environment now (e.g. before going offline)."),
                  root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """The training's locked environment: its requirements, lock and packages."""
    from buildenv.compile.launch import package_parent
    from buildenv.core.atomic import atomic_write_text
    from buildenv.env.resolve import Multiverse
    from buildenv.toolchain.toolchain import (
        environment_path,
        runner_interpreter,
        training_toolchain,
    )

    project = open_project(root)
    config = project.training(training)
    res = Multiverse(project).resolve(env)
    toolchain = training_toolchain(project, training, config, res, upgrade=upgrade)
    if write_lock is not None:
        if toolchain.lock is None:
            raise DiagnosticError([Diagnostic(
                "BE004", "--write-lock: in interpreter mode a training has no lock of its own "
                "([tool.buildenv.toolchains] mode)")], 2)
        atomic_write_text(write_lock, toolchain.lock.text)
    if create:
        runner_interpreter(project, toolchain, package_parent())
    where = environment_path(project, toolchain)
    data = {"training": training, "environment": env, **toolchain.lineage(),
            "requirements": [{"requirement": w.text, "origin": w.origin, "path": w.path,
                              "line": w.line} for w in toolchain.wanted],
            "path": str(where) if where else None,
            "ready": bool(where and where.is_dir())}
    if fmt is Format.json:
        print(json.dumps(data, indent=2))
        return
    state = ("ready" if data["ready"] else "created on the first build") if where else \
        "the interpreter running buildenv"
    print(f"{training} @ {env}: {len(toolchain.packages)} packages, lock "
          f"{toolchain.digest[:19]} ({toolchain.source}), python {toolchain.python}")
    for w in toolchain.wanted:
        print(f"  requires {w.text}  ({w.where() if w.path else w.origin})")
    print(f"  environment: {project.rel(where) if where else 'none'} ({state})")
    print("  packages: " + ", ".join(f"{n} {v}" for n, v in toolchain.packages.items()))
    if write_lock is not None:
        print(f"  lock written to {write_lock}")


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
              executor: Optional[str] = typer.Option(
                  None, "--executor", help="Where trainings run: local (processes here) or "
                  "ray (each pair a Ray task; BUILDENV_RAY_ADDRESS / RAY_ADDRESS, else a local "
                  "Ray). Default: [tool.buildenv] executor, else local."),
              root: Optional[Path] = RootOpt, fmt: Format = FormatOpt,
              progress: Optional[bool] = ProgressOpt, quiet: bool = QuietOpt) -> None:
    """Compile: check, validate, train, verify, emit (and register)."""
    from buildenv.compile.build import BuildOptions, build_pair
    from buildenv.compile.plan import (
        matrix_json,
        pairs,
        prepare_ray,
        render_matrix,
        run_matrix,
    )
    from buildenv.core.atomic import atomic_write_text
    from buildenv.data.executor import RayExecutor, make_executor
    from buildenv.env.resolve import Multiverse

    project = open_project(root, data_root)
    multiverse = Multiverse(project)
    runner = make_executor(executor, project)
    options = BuildOptions(out=out, register=register, use_cache=cache, timeout=timeout,
                           ray=runner if isinstance(runner, RayExecutor) else None)
    if options.ray is not None and options.ray.remote and not quiet:
        from buildenv.compile.remote import shipping_note

        note = shipping_note(project)
        if note is not None:
            print(note.to_text(), file=sys.stderr)
    if all_:
        if training or env or out:
            raise DiagnosticError([Diagnostic("BE004", "--all takes no TRAINING, --env or "
                                              "--out")], 2)
        selected = pairs(project.trainings, multiverse.names())
        with progress_shown(progress, quiet), runner:
            outcomes = run_matrix(project, multiverse, selected, options, jobs)
        payload = matrix_json(outcomes)
        target = matrix_out or project.root / "dist" / "matrix.json"
        atomic_write_text(target, json.dumps(payload, indent=2) + "\n")
        if fmt is Format.text:
            print(render_matrix(outcomes, quiet=quiet))
        else:
            _emit_builds(outcomes, fmt)
        if any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)  # an invalid environment fails only its own pairs
        return
    if not training or not env:
        raise DiagnosticError([Diagnostic("BE004", "build needs TRAINING and --env ENV, or "
                                          "--all")], 2)
    project.training(training)
    multiverse.resolve(env)  # an unknown or invalid environment is a configuration error: exit 2
    with progress_shown(progress, quiet), runner:
        if options.ray is not None:  # what --all does before scheduling, for this one pair
            prepare_ray(project, options.ray, [(training, env)],
                        {env: multiverse.resolve(env)})
        outcome = build_pair(project, multiverse, training, env, options)
    if fmt is Format.json:
        _emit_builds([outcome], fmt)
        if outcome.status == "failed":
            raise typer.Exit(outcome.exit_code)
        return
    if fmt is Format.text and outcome.status != "failed":
        where = project.rel(outcome.artifact) if outcome.artifact else "?"
        why = f" ({outcome.reason})" if outcome.reason else ""
        reg = outcome.registered
        reg_text = f", registered {training} v{reg['version']}" if reg else ""
        print(f"{training} @ {env}: {outcome.status}{why} -> {where}{reg_text}")
    if outcome.status == "failed":
        emit(quieted(outcome.diagnostics, fmt, quiet), fmt)
        raise typer.Exit(outcome.exit_code)  # 2 for a configuration error (BE767)
    finish(outcome.diagnostics, fmt, quiet)


def _emit_builds(outcomes: list, fmt: Format) -> None:
    """json: the diagnostics, plus each pair's outcome and phase timings (as in matrix.json);
    sarif: the diagnostics."""
    from buildenv.compile.plan import matrix_json

    diagnostics = [d for o in outcomes for d in o.diagnostics]
    if fmt is not Format.json:
        emit(diagnostics, fmt)
        return
    print(json.dumps({"diagnostics": [d.to_json() for d in sort_diagnostics(diagnostics)],
                      **matrix_json(outcomes)}, indent=2))


@app.command("register")
@command
def register_cmd(artifact: Path = typer.Argument(..., help="A built artifact directory, e.g. "
                                                 "from `buildenv build --out DIR`."),
                 training: str = typer.Option(..., "--training", help="Training name."),
                 env: str = typer.Option(..., "--env", help="Environment name."),
                 root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Log and register a built artifact in MLflow (idempotent: one version per digest)."""
    from buildenv.compile.artifact import read_lineage
    from buildenv.compile.integrity import verify_artifact
    from buildenv.compile.registry import ensure_registered

    project = open_project(root)
    lineage = read_lineage(artifact)
    if lineage is None or (lineage.get("training"), lineage.get("environment")) != (
            training, env):
        found = ("no buildenv.json lineage" if lineage is None else
                 f"lineage of {lineage.get('training')} @ {lineage.get('environment')}")
        raise DiagnosticError([Diagnostic(
            "BE771", f"{artifact} is not an artifact of {training} @ {env} ({found})",
            hints=(f"`buildenv build {training} --env {env} --out DIR` builds one",))], 2)
    verify_artifact(project, artifact, lineage.get("model_digest"), f"the artifact at {artifact}")
    registered, notes = ensure_registered(project, training, env, artifact, lineage)
    state = "registered" if registered.get("created") else "already registered as"
    if fmt is Format.text:
        print(f"{training} @ {env}: {state} {training} v{registered['version']}")
    finish(notes, fmt)


@app.command("ui")
@command
def ui_cmd(port: int = typer.Option(5000, "--port", help="Port to listen on."),
           host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on "
                                    "(127.0.0.1: this machine only)."),
           root: Optional[Path] = RootOpt) -> None:
    """Open the project's MLflow store in a browser: runs, registered models, aliases."""
    from buildenv.compile.registry import ui_command

    project = open_project(root)
    argv = ui_command(project, host, port)
    if argv is not None:  # MLflow's server (Flask) and UI come with the full distribution
        require("ui", "`buildenv ui`", "flask")
    if argv is None:
        print(f"the tracking URI is a server with its own UI: {project.tracking_uri()}")
        return
    print(f"MLflow UI for {project.tracking_uri()} at http://{host}:{port} (Ctrl-C stops it)",
          flush=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    # its own process group: the server's workers stop with it, whatever stops this command
    server = subprocess.Popen(argv, env=env, cwd=project.root, start_new_session=True)
    try:
        code = server.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.main): the server stops with us
        _stop_group(server)
        code = 0
    raise typer.Exit(0 if code in (0, -2, -15, 130) else code)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


@app.command("doctor")
@command
def doctor_cmd(root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """What isolation this machine gives trainings, and why not (docs/sandbox.md)."""
    from buildenv.compile.isolation import detect
    from buildenv.compile.sandbox_policy import default_mode

    project = open_project(root)
    support = detect(fresh=True)  # the real checks, not what an earlier build found
    mode = project.config.sandbox or default_mode()
    source = "[tool.buildenv] sandbox" if project.config.sandbox else "the default"
    if fmt is Format.json:
        print(json.dumps({"sandbox": support.to_json(), "policy": mode}, indent=2))
    else:
        print(_doctor_text(support, mode, source))
    if support.mechanism == "none":
        raise typer.Exit(1)


def _doctor_text(support: Support, mode: str, source: str) -> str:
    def row(name: str, ok: bool, text: str) -> str:
        return f"  {name:<12} {'yes' if ok else 'no ':<4} {text}"

    bwrap = (f"{support.bwrap} ({support.bwrap_version}), "
             f"{'with a user namespace' if support.bwrap_userns else 'as root, no user namespace'}"
             if support.bwrap else support.bwrap_problem or "")
    landlock = (f"ABI {support.landlock}" if support.landlock else support.landlock_problem or "")
    lines = [f"sandbox: {support.mechanism}",
             row("bubblewrap", bool(support.bwrap), bwrap),
             row("Landlock", bool(support.landlock), landlock),
             row("seccomp", support.seccomp, "socket filter" if support.seccomp else
                 "no socket filter for this machine"),
             *(f"  note: {hint}" for hint in support.hints),
             f"policy: {mode} ({source}); environments with restricted datasets require the "
             "sandbox"]
    what = {"bwrap+landlock": "trainings run in bubblewrap namespaces (own loopback only, "
            "read-only code, data as handed-over descriptors) with Landlock inside",
            "bwrap": "trainings run in bubblewrap namespaces; without Landlock root could "
            "re-open a handed-over descriptor for writing",
            "landlock": "trainings confine themselves with Landlock, seccomp (no IP sockets) "
            "and no capabilities; there is no PID namespace",
            "none": "trainings run unsandboxed: `required` fails, `preferred` warns"}
    lines.append(what[support.mechanism])
    return "\n".join(lines)


@app.command("card")
@command
def card_cmd(training: str = typer.Argument(..., help="Training name."),
             env: str = typer.Option(..., "--env", help="Environment name."),
             card_format: str = typer.Option("md", "--format", help="md (for people) or json "
                                             "(CycloneDX 1.6 ML-BOM)."),
             champion: bool = typer.Option(False, "--champion", help="The card of "
                                           "`<env>-champion` from the registry, with the gates "
                                           "that promoted it (default: dist/<training>/<env>)."),
             root: Optional[Path] = RootOpt) -> None:
    """The model card of a built artifact (or of the champion), generated from its lineage."""
    from buildenv.compile.card import CARD_JSON, CARD_MD

    if card_format not in ("md", "json"):
        raise DiagnosticError([Diagnostic("BE004", f"--format must be md or json, not "
                                          f"'{card_format}'")], 2)
    project = open_project(root)
    project.training(training)
    if champion:
        from buildenv.release.promotion_card import champion_card

        sys.stdout.write(champion_card(project, training, env, card_format))
        return
    path = project.root / "dist" / training / env / (CARD_JSON if card_format == "json"
                                                      else CARD_MD)
    if not path.is_file():
        raise DiagnosticError([Diagnostic(
            "BE515", f"no model card for {training} @ {env} at {project.rel(path)}",
            hints=(f"run `buildenv build {training} --env {env}` (every build writes one)",))])
    sys.stdout.write(path.read_text(encoding="utf-8"))


class OpsFormat(str, Enum):
    text = "text"
    json = "json"


@app.command("ops")
@command
def ops_cmd(target: str = typer.Argument(..., help="An artifact directory (dist/<training>/"
                                         "<env>) or an environment name."),
            config: bool = typer.Option(False, "--config", help="An artifact's operators in "
                                        "onnxruntime's reduced-build configuration format "
                                        "(an environment's are always printed so)."),
            root: Optional[Path] = RootOpt,
            fmt: OpsFormat = typer.Option(OpsFormat.text, "--format", help="text or json")
            ) -> None:
    """The ONNX operators an artifact runs, or that an environment's runtime must have."""
    from buildenv.compile.ops_report import ops_report

    report = ops_report(open_project(root), target)
    if fmt is OpsFormat.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.text(config))
