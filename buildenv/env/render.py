"""An environment file written by buildenv (`buildenv init`): YAML a person reads and edits.

Columns are one line each in flow style (`age: {dtype: int16, range: [0, 120]}`), as in the
example multiverse, with a comment where the data said something worth a look (nulls, mixed
values, a guess). Every scalar is written through the YAML dumper, so a string that looks like
a number, a date or a bool is quoted and reads back as the string it is; the document is
validated by the environment model before it is returned, so what is written loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from buildenv.env.spec import Environment

__all__ = ["DatasetDraft", "EnvironmentDraft", "render_environment"]


@dataclass
class DatasetDraft:
    name: str
    uri: str
    format: str
    columns: dict[str, dict[str, Any]]  # column -> its keys
    partitions: list[str] = field(default_factory=list)
    comment: str = ""  # after the dataset's name
    column_comments: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # comment lines after the columns
    paths_off: bool = False  # `partitions: []`: a restricted dataset's paths give no column


@dataclass
class EnvironmentDraft:
    name: str
    description: str
    datasets: list[DatasetDraft]
    header: list[str] = field(default_factory=list)  # comment lines at the top
    label: dict[str, Any] | None = None
    label_comment: str = ""
    serving: dict[str, Any] | None = None
    restricted: list[str] = field(default_factory=list)


def render_environment(draft: EnvironmentDraft) -> str:
    """The file's text; ValueError (a bug) if the document would not validate."""
    lines = [f"# {line}" if line else "#" for line in draft.header]
    lines += ["schema: 1", f"name: {_flow(draft.name)}",
              f"description: {_flow(draft.description)}", "datasets:"]
    for ds in draft.datasets:
        lines.append(_commented(f"  {_key(ds.name)}:", ds.comment))
        lines.append(f"    uri: {_flow(ds.uri)}")
        if ds.format != "parquet":
            lines.append(f"    format: {_flow(ds.format)}")
        if ds.partitions:
            lines.append(f"    partitions: {_flow(ds.partitions)}")
        elif ds.paths_off:
            lines.append("    partitions: []  # restricted: its directories' values are not read")
        lines.append("    columns:")
        for column, keys in ds.columns.items():
            lines.append(_commented(f"      {_key(column)}: {_flow(keys)}",
                                    ds.column_comments.get(column, "")))
        lines += [f"      # {note}" for note in ds.notes]
    if draft.label is not None:
        lines.append(_commented(f"label: {_flow(draft.label)}", draft.label_comment))
    if draft.serving is not None:
        lines.append("serving:")
        lines += [f"  {_key(k)}: {_flow(v)}" for k, v in draft.serving.items()]
    if draft.restricted:
        lines += ["privacy:", f"  restricted: {_flow(draft.restricted)}"]
    text = "\n".join(lines) + "\n"
    document = yaml.safe_load(text)
    try:
        Environment.model_validate(document)
    except Exception as exc:  # a bug in the writer, not in the data
        raise ValueError(f"the rendered environment does not validate: {exc}") from exc
    return text


def _flow(value: Any) -> str:
    """One value in YAML flow style, on one line, quoted where plain text would change it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True,
                          sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _key(name: str) -> str:
    return _flow(name)


def _commented(line: str, comment: str) -> str:
    return f"{line}  # {comment}" if comment else line
