"""The champion alias and its history: promote, rollback, history.

History is append-only: every alias move adds a registered-model tag
`buildenv.history.<env>.<seq>` holding one JSON entry (version, action, metric values, time,
actor). The alias is the truth about the present; the tags are the past. `rollback` replays
them as a stack (promote pushes, rollback pops) to find the previous champion.

Moves are compare-and-set: under the tracking store's cross-process lock the alias is read
again, and it moves only if it still points where the command's comparison saw it (else
BE768, nothing changed). A move to where the alias already points adds no history entry, so
racing promotions of one candidate record one move, and history sequence numbers are unique.

The registry has no transactions, so a move is three writes: the entry, marked pending; the
alias; the entry again, unmarked. A command killed between them leaves a pending last entry.
Readers count it only if the alias points at its version (the move happened); the next move
settles it first (unmarks it, or deletes it when the alias never moved). History and alias
therefore agree after a kill at any point.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from buildenv.compile.registry import TAG_ENV, client, store_lock
from buildenv.core.actor import actor
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.release.gates import (
    CHECK_PREFIX,
    Evaluation,
    alias_name,
    champion_version,
    registry_error,
)
from buildenv.release.promotion_card import record_promotion

# Deferred imports (mlflow): seconds of imports, paid only by what talks to the registry.

__all__ = ["HISTORY_PREFIX", "champion_stack", "history", "history_entries", "promote",
           "render_history", "rollback"]


HISTORY_PREFIX = "buildenv.history."
PENDING = "pending"  # on an entry whose alias move may not have happened


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def history_entries(c: Any, training: str, env: str) -> list[dict]:
    """The alias moves for `env`, oldest first (a move that never happened left out)."""
    from mlflow.exceptions import MlflowException

    try:
        model = c.get_registered_model(training)
    except MlflowException:
        return []
    entries = _entries(model, env)
    if entries and entries[-1].get(PENDING) and not _happened(model, env, entries[-1]):
        entries.pop()
    for e in entries:
        e.pop(PENDING, None)
    return entries


def _entries(model: Any, env: str) -> list[dict]:
    prefix = f"{HISTORY_PREFIX}{env}."
    out = []
    for key, value in (model.tags or {}).items():
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            try:
                entry = json.loads(value)
            except ValueError:
                continue
            entry["seq"] = int(key[len(prefix):])
            out.append(entry)
    return sorted(out, key=lambda e: e["seq"])


def _happened(model: Any, env: str, entry: dict) -> bool:
    """Whether the alias points where a pending entry moved it."""
    return str((model.aliases or {}).get(alias_name(env))) == str(entry["version"])


def _tag(env: str, seq: int) -> str:
    return f"{HISTORY_PREFIX}{env}.{seq:06d}"


def _write(c: Any, training: str, env: str, seq: int, entry: dict) -> None:
    c.set_registered_model_tag(training, _tag(env, seq),
                               json.dumps(entry, sort_keys=True, separators=(",", ":")))


def _settle(c: Any, training: str, env: str) -> list[dict]:
    """Finish what a killed move left (under the store lock): a pending last entry is kept,
    unmarked, if the alias moved, else deleted. The settled history."""
    model = c.get_registered_model(training)
    entries = _entries(model, env)
    if entries and entries[-1].get(PENDING):
        last = entries[-1]
        seq = last.pop("seq")
        if _happened(model, env, last):
            last.pop(PENDING)
            _write(c, training, env, seq, last)
            last["seq"] = seq
        else:
            c.delete_registered_model_tag(training, _tag(env, seq))
            entries.pop()
    return entries


def _move_alias(project: Project, training: str, env: str, version: str, entry: dict,
                expected: str | None) -> int | None:
    """Point the alias at `version` if it still points at `expected`: the history sequence
    number, or None when it already pointed at `version`."""
    try:
        with store_lock(project):
            c = client(project)
            entries = _settle(c, training, env)
            current = champion_version(c, training, env)
            now = str(current.version) if current is not None else None
            if now == str(version):
                return None
            if now != expected:
                raise DiagnosticError([Diagnostic(
                    "BE768", f"{alias_name(env)} of {training} moved to "
                    f"{'v' + now if now else 'unset'} while this command compared against "
                    f"{'v' + expected if expected else 'no champion'}; nothing was changed",
                    hints=("run the command again: it compares with the new champion",))])
            seq = max([e["seq"] for e in entries] + [0]) + 1
            _write(c, training, env, seq, {**entry, PENDING: True})
            c.set_registered_model_alias(training, alias_name(env), version)
            _write(c, training, env, seq, entry)
            return seq
    except Exception as exc:
        raise registry_error(project, exc, f"moving alias {alias_name(env)}") from None


def promote(project: Project, ev: Evaluation) -> int | None:
    """Set `<env>-champion` to the evaluated candidate; the history sequence number."""
    if not ev.passed:
        raise DiagnosticError(ev.diagnostics)
    if ev.already_champion:
        return None
    entry = {"action": "promote", "version": ev.candidate.version,
             "previous": ev.champion.version if ev.champion else None,
             "metric": ev.metric, "value": _finite(ev.candidate.value),
             "previous_value": _finite(ev.champion.value) if ev.champion else None,
             "source": ev.source, "at": _now(), "by": actor()}
    seq = _move_alias(project, ev.training, ev.env, ev.candidate.version, entry,
                      ev.champion.version if ev.champion else None)
    if seq is not None:
        try:
            record_promotion(project, ev, str(entry["at"]))
        except Exception as exc:
            raise registry_error(project, exc, "recording the promotion on the model card"
                                 ) from None
    return seq


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def champion_stack(entries: list[dict]) -> list[str]:
    """Replay history: promote pushes, rollback pops back to its target."""
    stack: list[str] = []
    for e in entries:
        version = str(e["version"])
        if e.get("action") == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def rollback(project: Project, training: str, env: str, dry_run: bool = False) -> dict:
    """Move `<env>-champion` back to the champion before the current one."""
    try:
        c = client(project)
        current = champion_version(c, training, env)
        entries = history_entries(c, training, env)
    except Exception as exc:
        raise registry_error(project, exc, "reading the champion history") from None
    stack = champion_stack(entries)
    now = str(current.version) if current is not None else None
    if stack and stack[-1] == now:
        stack.pop()
    target = stack[-1] if stack else None
    if target is None:
        raise DiagnosticError([Diagnostic(
            "BE706", f"no previous champion of {training} for {env} to roll back to "
            f"(current: {'v' + now if now else 'none'}, {len(entries)} history entries)",
            hints=(f"`buildenv history {training} --env {env}` lists the champions",))])
    result: dict[str, Any] = {"training": training, "environment": env, "from": now,
                              "to": target, "seq": None}
    if not dry_run:
        result["seq"] = _move_alias(project, training, env, target, {
            "action": "rollback", "version": target, "previous": now, "at": _now(),
            "by": actor()}, now)
    return result


def history(project: Project, training: str, env: str) -> dict:
    """Past champions (oldest first) with each version's lineage, and the current one."""
    try:
        c = client(project)
        current = champion_version(c, training, env)
        entries = history_entries(c, training, env)
        lineage: dict[str, dict] = {}
        for e in entries:
            v = str(e["version"])
            if v in lineage:
                continue
            multiverse = c.get_model_version(training, v)
            tags = dict(multiverse.tags or {})
            params = c.get_run(multiverse.run_id).data.params if multiverse.run_id else {}
            lineage[v] = {
                "environment": tags.get(TAG_ENV), "run_id": multiverse.run_id,
                "artifact_digest": tags.get("buildenv.artifact_digest"),
                "code_digest": tags.get("buildenv.code_digest"),
                "environment_digest": tags.get("buildenv.environment_digest"),
                "cache_key": tags.get("buildenv.cache_key"),
                "datasets": {k[len("dataset."):]: val for k, val in sorted(params.items())
                             if k.startswith("dataset.")},
                "checks": {k[len(CHECK_PREFIX):]: val for k, val in sorted(tags.items())
                           if k.startswith(CHECK_PREFIX)},
            }
    except Exception as exc:
        raise registry_error(project, exc, "reading the champion history") from None
    return {"training": training, "environment": env, "alias": alias_name(env),
            "current": str(current.version) if current is not None else None,
            "entries": [{**e, "lineage": lineage[str(e["version"])]} for e in entries]}


def render_history(data: dict) -> str:
    entries = data["entries"]
    head = (f"{data['training']} @ {data['environment']}: alias {data['alias']} -> "
            f"{'v' + data['current'] if data['current'] else 'unset'}")
    if not entries:
        return head + "\n(no champions yet)"
    rows = [("SEQ", "ACTION", "VERSION", "FROM", "METRIC", "WHEN", "BY", "CODE", "DATA")]
    for e in entries:
        lin = e["lineage"]
        metric = f"{e['metric']}={e['value']:.4f}" if e.get("value") is not None else "-"
        data_digests = ",".join(f"{k}:{_short(v)}" for k, v in lin["datasets"].items())
        rows.append((str(e["seq"]), e["action"], f"v{e['version']}",
                     f"v{e['previous']}" if e.get("previous") else "-", metric,
                     e.get("at", "-"), e.get("by", "-"), _short(lin.get("code_digest")),
                     data_digests or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _short(digest: str | None) -> str:
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:12]
