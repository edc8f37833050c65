"""Synthetic stand-ins: the file must be the one whose provenance the environment records.

An environment may un-restrict a dataset its parent restricts only by pointing it at a
synthetic file written by `buildenv synth` and recording that file's provenance under
`privacy.synthetic` (the resolver checks the record's shape: `env.resolve`). Here, where bytes
are hashed, the record is held to the file: its content digest must be the recorded one, and
the Parquet footer must carry the provenance `buildenv synth` embedded
(`buildenv.synthetic`: method, epsilon, seed, rows, source digest). A copy of real data, or a
file edited after it was generated, fails `buildenv lock` and every build (BE821). Reading the
footer decodes no value.
"""

from __future__ import annotations

import json
from typing import Any

from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.storage import locate
from buildenv.env.spec import Synthetic

# Deferred imports (pyarrow): pyarrow.parquet is a quarter of a second of `buildenv lock`'s start-
# up; only synthetic stand-ins need their footer read.

__all__ = ["METADATA_KEY", "embedded_provenance", "provenance_problems"]

METADATA_KEY = b"buildenv.synthetic"


def embedded_provenance(record: Synthetic | dict[str, Any]) -> dict[str, Any]:
    """What `buildenv synth` writes into the Parquet footer (everything but the file's own
    uri and digest, which the file cannot contain)."""
    data = record.model_dump(mode="json") if isinstance(record, Synthetic) else dict(record)
    return {k: data[k] for k in ("method", "epsilon", "seed", "rows", "source")}


def provenance_problems(project: Project, res: Any, dataset: str, digest: str
                        ) -> list[Diagnostic]:
    """BE821 when the synthetic file of `dataset` is not the one its provenance describes."""
    record = res.env.privacy.synthetic.get(dataset)
    if record is None:
        return []
    hint = (f"regenerate it: `buildenv synth {record.source.environment} --dataset "
            f"{record.source.dataset} --rows {record.rows}`",)
    if digest.split(":", 1)[0] == record.digest.split(":", 1)[0] and digest != record.digest:
        return [res.diag("BE821", f"dataset '{dataset}': {record.uri} has digest {digest}, not "
                         f"the {record.digest} its synthetic provenance records: the file was "
                         "replaced or edited", "privacy", "synthetic", dataset, "digest",
                         hints=hint)]
    embedded = _footer(project, record.uri)
    if embedded != embedded_provenance(record):
        what = ("carries no synthetic provenance (it was not written by `buildenv synth`)"
                if embedded is None else "carries provenance that differs from the record")
        return [res.diag("BE821", f"dataset '{dataset}': {record.uri} {what}", "privacy",
                         "synthetic", dataset, hints=hint)]
    return []


def _footer(project: Project, uri: str) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    try:
        with locate(uri, project).open_random() as handle:
            metadata = pq.read_schema(handle).metadata or {}
        return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
    except (OSError, ValueError, KeyError):
        return None
