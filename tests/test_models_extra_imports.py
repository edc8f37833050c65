"""buildenv's imports of the models extra stay out of its Pants runtime.

The runtime PEX of every `ml_model` holds the requirements of `[buildenv].runtime` (buildenv's
own sources here) and of the training's code. torch, XGBoost, LightGBM and their ONNX
converters are the models extra: a training that imports one brings it (BUILD's overrides add
the converter), so buildenv's own imports of them say `# pants: no-infer-dep`. Pants' import
parser honours the pragma only as a comment on the line where the imported name ends: on the
first line of a parenthesized `from ... import (` it is ignored, and the requirement is
inferred. One such import put torch (and onnxscript, onnxmltools) into every pair's runtime
PEX, so torch-mlp's build no longer had a PEX, a venv, or a place in the start order of its
own (rules/README.md, "The order processes start in").
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

MODELS_EXTRA = {"torch", "xgboost", "lightgbm", "onnxmltools", "onnxscript"}
PRAGMA = "# pants: no-infer-dep"


def unmarked(path: Path) -> list[str]:
    """`file:line name` of each import of the models extra whose name's line lacks the
    pragma after it (where Pants looks for it)."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""] * len(node.names)
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module, alias in zip(modules, node.names):
            if module.split(".")[0] not in MODELS_EXTRA:
                continue
            end = alias.end_lineno or node.lineno
            line = lines[end - 1]
            if PRAGMA not in line[alias.end_col_offset or 0:]:
                found.append(f"{path}:{end} {alias.name}")
    return found


def test_buildenvs_imports_of_the_models_extra_say_no_infer_dep():
    found = [f for path in sorted((REPO_ROOT / "buildenv").rglob("*.py"))
             for f in unmarked(path)]
    assert found == []


def test_the_check_catches_a_pragma_pants_does_not_read(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import torch  # pants: no-infer-dep\n"
        "from torch.onnx import export\n"
        "from onnxmltools.convert import (  # pants: no-infer-dep\n"
        "    convert_xgboost,\n"
        ")\n"
        "from onnxmltools.convert import (\n"
        "    convert_lightgbm,  # pants: no-infer-dep\n"
        ")\n"
        "import numpy\n"
    )
    assert [f.split(":", 1)[1] for f in unmarked(module)] == ["2 export", "4 convert_xgboost"]
