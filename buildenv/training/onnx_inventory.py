"""The operators an ONNX graph runs: one inventory, read by verification, `buildenv ops` and the
model card.

Every node of the graph counts, including the bodies of control flow (`If`, `Loop`, `Scan`
subgraphs) and of model-local functions (a call to a local function is not an operator of the
runtime: its body is). Operators are named `domain:op_type` with the default domain written
`ai.onnx`, which is how `serving.ops` globs match them and how onnxruntime's reduced-build
configuration names domains. Each operator carries the model's opset for its domain, its node
count, and the first node using it (with the subgraph it sits in).

Reading a file parses only what the inventory needs: a wire-compatible subset of onnx's
schema (`_lite_model`: nodes' names, types and domains, graph-valued attributes, opset
imports, functions) leaves weights and the large attribute arrays of tree ensembles unparsed
(protobuf skips fields a schema does not name), which makes it several times faster than
`onnx.load` on a 50 MB tree ensemble. External tensor data is never read.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Deferred imports (onnx, google): onnx (and the protobuf runtime it brings) is imported when a
# graph, a file or onnx's schemas are read; a scikit-learn stack build imports this module
# (`ml_opset`) without needing either.

__all__ = ["DEFAULT_DOMAIN", "Inventory", "InventoryError", "Operator", "domain_operators",
           "inventory", "ml_opset", "read_inventory", "reduced_build_config"]

DEFAULT_DOMAIN = "ai.onnx"


class InventoryError(Exception):
    """The file is not a readable ONNX model."""


@dataclass(frozen=True)
class Operator:
    domain: str
    op_type: str
    opset: int | None  # the model's (or function's) opset for the domain
    nodes: int
    first_node: str  # node name (or `#index`), prefixed by the subgraph it sits in

    @property
    def name(self) -> str:
        return f"{self.domain}:{self.op_type}"

    def to_json(self) -> dict:
        return {"operator": self.name, "opset": self.opset, "nodes": self.nodes,
                "first_node": self.first_node}


@dataclass(frozen=True)
class Inventory:
    ir_version: int
    opset_import: dict[str, int]
    operators: tuple[Operator, ...]  # sorted by name

    def opset(self, domain: str = DEFAULT_DOMAIN) -> int | None:
        return self.opset_import.get(domain)

    def to_json(self) -> dict:
        return {"ir_version": self.ir_version, "opset_import": dict(sorted(
            self.opset_import.items())), "operators": [op.to_json() for op in self.operators]}

    @classmethod
    def from_json(cls, data: dict) -> Inventory:
        ops = []
        for item in data.get("operators", []):
            domain, _, op_type = item["operator"].partition(":")
            ops.append(Operator(domain, op_type, item.get("opset"), int(item.get("nodes", 1)),
                                str(item.get("first_node", ""))))
        return cls(int(data["ir_version"]), {str(k): int(v) for k, v in
                                             data.get("opset_import", {}).items()}, tuple(ops))

    def config_lines(self) -> list[str]:
        """onnxruntime's reduced-build configuration (`domain;opset;Op1,Op2`), one line per
        domain and opset."""
        grouped: dict[tuple[str, int | None], set[str]] = {}
        for op in self.operators:
            grouped.setdefault((op.domain, op.opset), set()).add(op.op_type)
        return [f"{domain};{opset if opset is not None else ''};{','.join(sorted(names))}"
                for (domain, opset), names in sorted(grouped.items(),
                                                     key=lambda kv: (kv[0][0], kv[0][1] or 0))]


def _domain(name: str) -> str:
    return name or DEFAULT_DOMAIN


def inventory(model: Any) -> Inventory:
    """The inventory of an `onnx.ModelProto` (or of its lite form, `_lite_model`)."""
    opsets = {_domain(o.domain): int(o.version) for o in model.opset_import}
    functions = {(_domain(f.domain), f.name): f for f in model.functions}
    counts: dict[tuple[str, str], list] = {}  # -> [opset, nodes, first node]
    expanded: set[tuple[str, str]] = set()

    def visit(graph_nodes: Any, where: str, imports: dict[str, int]) -> None:
        for index, node in enumerate(graph_nodes):
            key = (_domain(node.domain), node.op_type)
            label = f"{where}{node.name or f'#{index}'}"
            if key in functions:
                if key not in expanded:
                    expanded.add(key)
                    function = functions[key]
                    own = {**imports, **{_domain(o.domain): int(o.version)
                                         for o in function.opset_import}}
                    visit(function.node, f"{where}{key[0]}:{key[1]} > ", own)
            else:
                entry = counts.setdefault(key, [imports.get(key[0]), 0, label])
                entry[1] += 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    visit(attr.g.node, f"{label}.{attr.name} > ", imports)
                for i, sub in enumerate(attr.graphs):
                    visit(sub.node, f"{label}.{attr.name}[{i}] > ", imports)

    visit(model.graph.node, "", opsets)
    operators = tuple(Operator(d, t, opset, n, first)
                      for (d, t), (opset, n, first) in sorted(counts.items()))
    return Inventory(int(model.ir_version), dict(sorted(opsets.items())), operators)


def read_inventory(path: Path) -> Inventory:
    """The inventory of an ONNX file, parsing only what it needs."""
    from google.protobuf.message import DecodeError  # pants: no-infer-dep

    model = _lite_model()()
    try:
        model.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise InventoryError(f"{path.name} is not a readable ONNX model "
                             f"({type(exc).__name__})") from None
    if not model.graph.node or not model.opset_import or not model.ir_version:
        raise InventoryError(f"{path.name} is not a readable ONNX model (no graph, opset or "
                             "IR version)")
    return inventory(model)


@functools.cache
def _lite_model() -> Any:
    """A message class reading ONNX's ModelProto wire format, with only the fields an
    inventory needs (numbers as in onnx.proto; every other field is skipped unparsed)."""
    # protobuf comes with onnx (the models extra, and every onnx-stack training's toolchain)
    from google.protobuf import (
        descriptor_pb2,  # pants: no-infer-dep
        descriptor_pool,  # pants: no-infer-dep
        message_factory,  # pants: no-infer-dep
    )

    field = descriptor_pb2.FieldDescriptorProto
    one, many = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    text, number, nested = field.TYPE_STRING, field.TYPE_INT64, field.TYPE_MESSAGE
    schema = {  # message -> (field, number, type, label, message type)
        "Opset": [("domain", 1, text, one, ""), ("version", 2, number, one, "")],
        "Attribute": [("name", 1, text, one, ""), ("g", 6, nested, one, "Graph"),
                      ("graphs", 11, nested, many, "Graph")],
        "Node": [("name", 3, text, one, ""), ("op_type", 4, text, one, ""),
                 ("domain", 7, text, one, ""), ("attribute", 5, nested, many, "Attribute")],
        "Graph": [("node", 1, nested, many, "Node")],
        "Function": [("name", 1, text, one, ""), ("node", 7, nested, many, "Node"),
                     ("opset_import", 9, nested, many, "Opset"), ("domain", 10, text, one, "")],
        "Model": [("ir_version", 1, number, one, ""), ("opset_import", 8, nested, many, "Opset"),
                  ("graph", 7, nested, one, "Graph"), ("functions", 25, nested, many,
                                                       "Function")],
    }
    package = "buildenv_onnx_inventory"
    proto = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package,
                                               syntax="proto2")
    for name, fields in schema.items():
        message = proto.message_type.add(name=name)
        for fname, num, kind, label, target in fields:
            entry = message.field.add(name=fname, number=num, type=kind, label=label)
            if target:
                entry.type_name = f".{package}.{target}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Model"))


def ml_opset(opset: int) -> int:
    """The `ai.onnx.ml` opset released with default-domain `opset` (onnx's version table), at
    most 3: the converters emit TreeEnsembleClassifier/Regressor, deprecated from ml 5."""
    from onnx.helper import VERSION_TABLE

    paired = [row[3] for row in VERSION_TABLE if row[2] <= opset]
    return max(1, min(3, max(paired) if paired else 1))


def domain_operators(domain: str, opset: int) -> list[str]:
    """Every operator onnx defines in `domain` at `opset` (not deprecated there)."""
    import onnx.defs

    names = {s.name for s in onnx.defs.get_all_schemas_with_history()
             if _domain(s.domain) == domain and s.since_version <= opset}
    out = []
    for name in sorted(names):
        try:
            schema = onnx.defs.get_schema(name, opset, "" if domain == DEFAULT_DOMAIN else
                                          domain)
        except onnx.defs.SchemaError:
            continue
        if not schema.deprecated:
            out.append(name)
    return out


def reduced_build_config(patterns: list[str], opsets: dict[str, int]) -> list[str]:
    """An allow-list (`domain:op_type` globs) expanded against onnx's operator schemas at the
    given opset per domain, as onnxruntime's reduced-build configuration."""
    lines = []
    for domain, opset in sorted(opsets.items()):
        allowed = [op for op in domain_operators(domain, opset)
                   if any(fnmatch.fnmatchcase(f"{domain}:{op}", p) for p in patterns)]
        if allowed:
            lines.append(f"{domain};{opset};{','.join(allowed)}")
    return lines
