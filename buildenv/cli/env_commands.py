"""Commands about environments themselves: envs, show, diff, schema, explain, version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from buildenv import __version__
from buildenv.cli.application import (
    DataFormat,
    Format,
    RootOpt,
    app,
    command,
    emit,
    open_project,
)
from buildenv.core.diagnostics import Diagnostic, DiagnosticError

# Deferred imports (buildenv, yaml): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.


@app.command("envs")
@command
def envs_cmd(root: Optional[Path] = RootOpt,
             fmt: DataFormat = typer.Option(DataFormat.yaml, "--format",
                                            help="table (yaml) or json")) -> None:
    """List environments: name, parent, datasets, lock state."""
    from buildenv.data.lock.staleness import lock_state
    from buildenv.env.resolve import Multiverse

    multiverse = Multiverse(open_project(root))
    resolved, problems = multiverse.resolve_all()
    rows: list[dict[str, Any]] = []
    for name in multiverse.names():
        res = resolved.get(name)
        if res is None:  # what its file says, as far as it can be read
            written = multiverse.written(name)
            extends = written.get("extends")
            datasets = written.get("datasets")
            rows.append({"name": name, "extends": extends if isinstance(extends, str) else None,
                         "datasets": sorted(map(str, datasets))
                         if isinstance(datasets, dict) else [],
                         "lock": "invalid", "serving": None})
            continue
        rows.append({"name": name, "extends": res.env.extends,
                     "datasets": sorted(res.env.datasets), "lock": lock_state(multiverse, res),
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
    emit(problems, Format.text)
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
    from buildenv.env.resolve import Multiverse
    from buildenv.env.views import explained_yaml, resolved_document

    multiverse = Multiverse(open_project(root))
    res = multiverse.resolve(env)
    if explain:
        print(explained_yaml(res), end="")
        print(_pinned_versions(multiverse.project, env), end="")
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
    from buildenv.env.resolve import Multiverse
    from buildenv.env.views import diff_environments

    multiverse = Multiverse(open_project(root))
    a, b = multiverse.resolve(env_a), multiverse.resolve(env_b)
    changes = diff_environments(a, b)
    data = _data_changes(multiverse.project, env_a, env_b)
    if fmt is DataFormat.json:
        print(json.dumps({"a": env_a, "b": env_b, "changes": changes, "data": data},
                         indent=2, default=str))
        return
    if not changes and not data:
        print(f"{env_a} and {env_b} resolve to the same environment")
        return
    print(f"--- {env_a}\n+++ {env_b}")
    for item in data:  # the pinned data, compared from the locks (no row is read)
        files = item.get("files")
        shared = (f"; files: {files['shared']} shared, {files['only_a']} only in {env_a}, "
                  f"{files['only_b']} only in {env_b}" if files else "")
        print(f"~ data {item['dataset']}: {item['a']} -> {item['b']}{shared}")
    for change in changes:
        path = change["path"]
        if change["kind"] == "added":
            print(f"+ {path}: {_text(change['b'])}")
        elif change["kind"] == "removed":
            print(f"- {path}: {_text(change['a'])}")
        elif isinstance(change["a"], list) and isinstance(change["b"], list) and max(
                len(_text(change["a"])), len(_text(change["b"]))) > 100:
            print(f"~ {path}:")  # element by element: a long list never hides the change
            for line in _list_changes(change["a"], change["b"]):
                print(f"    {line}")
        else:
            print(f"~ {path}: {_text(change['a'])} -> {_text(change['b'])}")


def _pinned_versions(project, env: str) -> str:
    """`# locked: ...` lines naming the version the lock pins of each table."""
    from buildenv.data.lock.compare import pinned_text
    from buildenv.data.lock.lockfile import lock_path, read_lock

    try:
        lock = read_lock(project, env)
    except DiagnosticError:
        return ""
    if lock is None:
        return ""
    where = project.rel(lock_path(project, env))
    return "".join(f"# locked in {where}: datasets.{name} = {pinned_text(entry)}\n"
                   for name, entry in sorted(lock.datasets.items()) if entry.table is not None)


def _data_changes(project, env_a: str, env_b: str) -> list[dict]:
    """What the two locks pin differently (empty when either has no readable lock)."""
    from buildenv.data.lock.compare import compare_locks
    from buildenv.data.lock.lockfile import read_lock

    try:
        return compare_locks(read_lock(project, env_a), read_lock(project, env_b))
    except DiagnosticError:
        return []


def _text(value) -> str:
    return json.dumps(value, default=str)


def _list_changes(a: list, b: list) -> list[str]:
    keys_a = [_text(v) for v in a]
    keys_b = [_text(v) for v in b]
    lines = [f"- {k}" for k in keys_a if k not in keys_b]
    lines += [f"+ {k}" for k in keys_b if k not in keys_a]
    return lines or [f"(same items, reordered: {', '.join(keys_b)})"]


@app.command("schema")
@command
def schema_cmd(full: bool = typer.Option(False, "--resolved", help="Schema of a resolved "
                                         "environment (no partial `extends` files).")) -> None:
    """Print the JSON Schema of environment files."""
    from buildenv.env.spec import file_json_schema, json_schema

    print(json.dumps(json_schema() if full else file_json_schema(), indent=2))


@app.command("explain")
@command
def explain_cmd(code: str = typer.Argument(..., help="A diagnostic code, e.g. BE102.")) -> None:
    """What a diagnostic code means and how to fix it."""
    from buildenv.core.codes import CODES, explain

    text = explain(code)
    if text is None:
        from buildenv.core.diagnostics import did_you_mean

        hint = did_you_mean(code.upper(), CODES) or "codes look like BE102"
        raise DiagnosticError([Diagnostic("BE004", f"unknown code '{code}'", hints=(hint,))], 2)
    print(text)


@app.command("version")
def version_cmd() -> None:
    """Print buildenv's version."""
    print(__version__)
