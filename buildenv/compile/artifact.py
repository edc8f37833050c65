"""The compiled artifact (SPEC §7): an MLflow model directory plus `buildenv.json` lineage.

Reproducibility: MLflow writes a creation time and a random uuid into
`MLmodel`; we derive the uuid from the build's cache key and take the time
from SOURCE_DATE_EPOCH (the reproducible-builds convention; 0 when unset), so
the same inputs give the same bytes. Lineage holds no timestamps or host paths.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path

import yaml

from buildenv.core.model_runtime import UNHASHED, artifact_digest

__all__ = ["LINEAGE_FILE", "LINEAGE_VERSION", "SIGNATURE_FILE", "UNHASHED", "build_time_iso",
           "card_serial", "finalize_mlmodel", "read_lineage", "tree_digest", "write_lineage"]

LINEAGE_FILE = "buildenv.json"
SIGNATURE_FILE = "buildenv.sig"  # optional Sigstore bundle over every other file
# UNHASHED (the lineage and the signature: written after `model_digest`, outside it) is
# core.model_runtime's, which the serving app shares.
LINEAGE_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c1f55-63a4-4c5e-9b1b-2b7e3c0c9a10")


def build_time() -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def build_time_iso() -> str:
    """The build time (SOURCE_DATE_EPOCH) in ISO 8601, for documents that record one."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def card_serial(cache_key: str) -> str:
    """A uuid derived from the inputs (the model card's serial number)."""
    return str(uuid.uuid5(_NAMESPACE, "card:" + cache_key))


def finalize_mlmodel(model_dir: Path, cache_key: str) -> None:
    """Replace MLflow's random uuid and wall-clock time with values derived from the inputs."""
    path = model_dir / "MLmodel"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["model_uuid"] = uuid.uuid5(_NAMESPACE, cache_key).hex
    data["utc_time_created"] = build_time()
    data.pop("model_id", None)
    path.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=True),
                    encoding="utf-8")
    _unpin_build_tools(model_dir)


def _unpin_build_tools(model_dir: Path) -> None:
    """MLflow pins the *building* machine's pip/setuptools in the environment files; those say
    nothing about the model and differ between a venv and a Pants sandbox, so drop the pins."""

    def plain(item):
        if isinstance(item, str):
            for tool in ("pip", "setuptools", "wheel"):
                if item == tool or (item.startswith(tool) and item[len(tool)] in "<>=!~ "):
                    return tool
        return item

    python_env = model_dir / "python_env.yaml"
    if python_env.is_file():
        data = yaml.safe_load(python_env.read_text(encoding="utf-8"))
        data["build_dependencies"] = [plain(d) for d in data.get("build_dependencies") or []]
        python_env.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=False),
                              encoding="utf-8")
    conda = model_dir / "conda.yaml"
    if conda.is_file():
        data = yaml.safe_load(conda.read_text(encoding="utf-8"))
        data["dependencies"] = [plain(d) for d in data.get("dependencies") or []]
        conda.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=False),
                         encoding="utf-8")


def tree_digest(directory: Path, exclude: tuple[str, ...] = ()) -> str:
    """Digest of a directory's files (relative paths and contents), independent of mtimes:
    the one computation the serving app runs too (`core.model_runtime.artifact_digest`)."""
    return artifact_digest(str(directory), exclude)


def write_lineage(model_dir: Path, lineage: dict) -> None:
    lineage = {"format_version": LINEAGE_VERSION, **lineage,
               "model_digest": tree_digest(model_dir, exclude=UNHASHED)}
    (model_dir / LINEAGE_FILE).write_text(
        json.dumps(lineage, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_lineage(model_dir: Path) -> dict | None:
    path = model_dir / LINEAGE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format_version", 0) > LINEAGE_VERSION:
        return None
    return data
