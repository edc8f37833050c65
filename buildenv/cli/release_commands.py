"""Commands from artifact to production: promote, history, rollback, retrain, image."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.application import (
    DataFormat,
    Format,
    FormatOpt,
    ProgressOpt,
    QuietOpt,
    RootOpt,
    app,
    command,
    emit,
    open_project,
    progress_shown,
    quieted,
)

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.


@app.command("promote")
@command
def promote_cmd(training: str = typer.Argument(..., help="Training name."),
                env: str = typer.Option(..., "--env", help="Environment name."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Evaluate the gates and "
                                             "print the comparison; move nothing."),
                root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Gate the built candidate against `<env>-champion` on the same holdout, then promote."""
    from buildenv.env.resolve import Multiverse
    from buildenv.release.champion import promote
    from buildenv.release.gates import alias_name, evaluate

    project = open_project(root)
    project.training(training)
    res = Multiverse(project).resolve(env)
    ev = evaluate(project, res, training)
    if fmt is Format.json:
        print(json.dumps({"evaluation": ev.to_json(), "dry_run": dry_run}, indent=2))
    else:
        print(ev.table())
    emit(ev.diagnostics, Format.text if fmt is Format.json else fmt, sys.stderr)
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
        if seq is None:  # a concurrent promotion of the same candidate moved it first
            print(f"{training} v{ev.candidate.version} is already {alias_name(env)}",
                  file=sys.stderr)
        else:
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
    from buildenv.release.champion import history, render_history

    project = open_project(root)
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
    from buildenv.release.champion import rollback
    from buildenv.release.gates import alias_name

    project = open_project(root)
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
                root: Optional[Path] = RootOpt, fmt: Format = FormatOpt,
                progress: Optional[bool] = ProgressOpt, quiet: bool = QuietOpt) -> None:
    """For cron/CI: new data -> validate, drift, relock, rebuild, gate (and promote).

    A stop (failed data check, build or gate) exits 1 and leaves the lock, dist/ and the
    aliases as they were.
    """
    from buildenv.release.retrain import RetrainOptions, retrain

    project = open_project(root)
    with progress_shown(progress, quiet):
        result = retrain(project, env, RetrainOptions(dataset, uri, promote, events))
    if fmt is Format.text:
        for event in result.events[-1:] if quiet else result.events:
            who = f" {event['training']}" if event.get("training") else ""
            first = (event.get("message") or "").splitlines()[:1]
            print(f"[{event['step']}{who}] {event['status']}" + (f": {first[0]}" if first
                                                                  else ""))
    emit(quieted(result.diagnostics, fmt, quiet), fmt, sys.stderr if fmt is Format.text else None)
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
              champion: bool = typer.Option(False, "--champion", help="Package the version "
                                            "`<env>-champion` points to, from the registry "
                                            "(default: dist/<training>/<env>)."),
              root: Optional[Path] = RootOpt, progress: Optional[bool] = ProgressOpt,
              quiet: bool = QuietOpt) -> None:
    """A serving image: Docker build context, daemon build, and/or reproducible OCI archive."""
    from buildenv.release.image_build import ImageOptions, ImageOutcome, build_image

    project = open_project(root)
    options = ImageOptions(out=out, oci=oci, base_rootfs=base_rootfs, base_image=base_image,
                           tag=tag, docker=docker, champion=champion)
    outcome = ImageOutcome()
    try:
        with progress_shown(progress, quiet):
            build_image(project, training, env, options, outcome)
    finally:
        emit(quieted(outcome.notes, Format.text, quiet), Format.text)
        for line in outcome.said:
            if line.final or not quiet:
                print(line.text, file=sys.stderr if line.to_stderr else sys.stdout)
