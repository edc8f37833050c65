"""ctx.scan keeps memory bounded: over 12M rows (288 MB decoded) the peak RSS of a scan grows
by at most two batches plus 200 MiB, measured in a fresh process; reading the same rows whole
with ctx.read exceeds that bound (so the measurement can fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, invoke_cli

FILES = 10
ROWS = 1_200_000  # per file
BATCH_ROWS = 100_000
ROW_BYTES = 3 * 8

ENV = """\
name: big
datasets:
  wide:
    uri: data/wide/
    columns:
      a: {dtype: int64}
      b: {dtype: int64}
      c: {dtype: int64}
"""

PROBE = r"""
import gc, json, sys
from pathlib import Path
from buildenv.training.context import BuildContext
from buildenv.core.project import Project
from buildenv.data.lock.lockfile import read_lock
from buildenv.env.resolve import Multiverse
import pandas, pyarrow.parquet  # imports are not what is measured

def hwm_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

project = Project.discover(sys.argv[1])
res = Multiverse(project).resolve("big")
lock = read_lock(project, "big")
ctx = BuildContext(res.env, 0, project, lock.pins(), manifests=lock.manifests())
gc.collect()
Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
base = rss_mib()
rows = 0
total = 0
if sys.argv[2] == "scan":
    for frame in ctx.scan("wide", columns=["a", "b", "c"], batch_rows=int(sys.argv[3])):
        rows += len(frame)
        total += int(frame["a"].iloc[0])
else:
    frame = ctx.read("wide", columns=["a", "b", "c"])
    rows = len(frame)
print(json.dumps({"base": base, "peak": hwm_mib(), "rows": rows,
                  "errors": len(ctx.gate_errors)}))
"""


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scanmem")
    (root / "environments").mkdir()
    (root / "environments" / "big.yaml").write_text(ENV)
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    base = np.arange(ROWS, dtype=np.int64)
    for i in range(FILES):
        target = root / "data" / "wide" / f"part-{i:02d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"a": base + i, "b": base % 97, "c": base // 1000}), target)
    code, _, err = invoke_cli(["lock"], root)
    assert code == 0, err
    return root


def probe(root: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(root), mode, str(BATCH_ROWS)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_scan_memory_is_bounded_by_the_batch_not_the_data(big_repo):
    bound = 2 * BATCH_ROWS * ROW_BYTES / 2**20 + 200
    scan = probe(big_repo, "scan")
    assert scan["rows"] == FILES * ROWS and scan["errors"] == 0
    assert scan["peak"] - scan["base"] <= bound, scan
    whole = probe(big_repo, "read")
    assert whole["rows"] == FILES * ROWS
    assert whole["peak"] - whole["base"] > bound, whole  # the measurement can fail
