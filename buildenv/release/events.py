"""What a retrain reports: one event per step, as JSON lines and tags on one MLflow run."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

from buildenv.compile.registry import client
from buildenv.core.project import Project

# Deferred imports (mlflow): seconds of imports, paid only by what talks to the registry.

__all__ = ["EventLog", "Tracker"]


class EventLog:
    """Every step's outcome: in memory, appended to a JSON-lines file, tagged on an MLflow run."""

    def __init__(self, retrain_id: str, env: str, path: Path | None):
        self.retrain_id, self.env, self.path = retrain_id, env, path
        self.events: list[dict] = []
        self.run_tags: dict[str, str] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, step: str, status: str, message: str = "", **details: Any) -> dict:
        event = {"seq": len(self.events) + 1,
                 "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                 "retrain": self.retrain_id, "environment": self.env, "step": step,
                 "status": status, "message": message, **details}
        self.events.append(event)
        key = step if "training" not in details else f"{step}.{details['training']}"
        self.run_tags[f"buildenv.step.{key}"] = status
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        return event


class Tracker:
    """One MLflow run per retrain (experiment `buildenv/retrain`); best effort."""

    def __init__(self, project: Project, env: str, retrain_id: str):
        self.project, self.env, self.retrain_id = project, env, retrain_id
        self.run_id: str | None = None
        self.client: Any = None

    def start(self, log: EventLog) -> None:
        try:
            self.client = client(self.project)
            name = "buildenv/retrain"
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                location = None
                uri = self.project.tracking_uri()
                if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
                    location = (self.project.state_dir / "mlartifacts").resolve().as_uri()
                exp_id = self.client.create_experiment(name, artifact_location=location)
            else:
                exp_id = exp.experiment_id
            run = self.client.create_run(exp_id, run_name=f"retrain {self.env}", tags={
                "buildenv.environment": self.env, "buildenv.retrain_id": self.retrain_id})
            self.run_id = run.info.run_id
        except Exception as exc:
            log.emit("tracking", "warning", f"retrain not tracked in MLflow: "
                     f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def finish(self, log: EventLog, status: str) -> None:
        if self.run_id is None:
            return

        from mlflow.entities import RunTag

        try:
            tags = [RunTag(k, v) for k, v in sorted(log.run_tags.items())]
            tags.append(RunTag("buildenv.retrain_status", status))
            self.client.log_batch(self.run_id, tags=tags)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "events.jsonl"
                path.write_text("".join(json.dumps(e, sort_keys=True, default=str) + "\n"
                                        for e in log.events))
                self.client.log_artifact(self.run_id, str(path))
            self.client.set_terminated(self.run_id,
                                       "FAILED" if status == "stopped" else "FINISHED")
        except Exception:
            pass
