"""`buildenv drift`: planted shifts fire the right alerts with the right numbers, an unshifted
resample fires none, triage suppresses what no model cares about, thresholds point at their YAML
lines, and a rare value of a restricted dataset never reaches any output."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from buildenv.cli import app
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.labels.locking import lock_environments
from buildenv.monitor import drift, formatting, statistics
from buildenv.monitor.report import BASE_COLOR, CAND_COLOR

PROD_YAML = """\
name: prod
description: drift test environment
datasets:
  items:
    uri: data/items.parquet
    columns:
      item_id: {dtype: int64, nullable: false}
      genre: {dtype: string, nullable: false, domain: [comedy, drama, horror, action]}
      runtime: {dtype: float64, range: [1, 600]}
      released: {dtype: date}
      flag: {dtype: bool}
  people:
    uri: data/people.parquet
    columns:
      person_id: {dtype: int64, nullable: false}
      country: {dtype: string, domain: [US, GB, DE, FR]}
      income: {dtype: float64}
monitoring:
  drift:
    categorical: {linf: 0.1}
    numeric: {psi: 0.2}
    columns:
      genre: {linf: 0.05}
      runtime: {null_fraction: 0.05}
  min_importance: 0.05
privacy:
  restricted: [people]
  min_group_size: 10
"""

NEXT_YAML = """\
name: next
extends: prod
datasets:
  items:
    uri: data/items-next.parquet
"""

GENRES = np.array(["comedy", "drama", "horror", "action"])
COUNTRIES = np.array(["US", "GB", "DE", "FR"])
SENTINEL_VALUE = "ZZSENTINELQ"
SENTINEL_NUMBER = 987654.321
N = 4000


def items(seed: int, genre_p=(0.4, 0.3, 0.2, 0.1), runtime_shift=0.0, runtime_nulls=0.01,
          flag_p=0.3, id_offset=0, extra_genre: tuple[str, int] | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    genre = GENRES[rng.choice(4, N, p=genre_p)].astype(object)
    if extra_genre:
        genre[: extra_genre[1]] = extra_genre[0]
    runtime = rng.normal(100 + runtime_shift, 15, N)
    released = rng.integers(18262, 19723, N)  # 2020-01-01 .. 2023-12-31
    return pa.table({
        "item_id": pa.array(np.arange(N) + id_offset, pa.int64()),
        "genre": pa.array(genre.tolist(), pa.string()),
        "runtime": pa.array(runtime, pa.float64(), mask=rng.random(N) < runtime_nulls),
        "released": pa.array(released.astype("int32"), pa.int32()).cast(pa.date32()),
        "flag": pa.array(rng.random(N) < flag_p, pa.bool_()),
    })


def people(seed: int, country_p=(0.5, 0.2, 0.2, 0.1), sentinel=False,
           squash=False) -> pa.Table:
    rng = np.random.default_rng(seed)
    country = COUNTRIES[rng.choice(4, N, p=country_p)].astype(object)
    income = rng.lognormal(10, 0.5, N)
    if squash:  # the top decile moves down: the locked version's top bin empties
        income = np.where(income >= 40_000, income / 3, income)
    if sentinel:
        country[:3] = SENTINEL_VALUE
        income[5] = SENTINEL_NUMBER
    return pa.table({"person_id": pa.array(np.arange(N), pa.int64()),
                     "country": pa.array(country.tolist(), pa.string()),
                     "income": pa.array(income, pa.float64())})


LINEAGE = {
    "format_version": 1, "training": "model", "environment": "prod",
    "inputs": ["genre", "runtime", "released", "flag", "country", "income"],
    "datasets": {"items": {"columns_read": ["item_id", "genre", "runtime", "released", "flag"]},
                 "people": {"columns_read": ["person_id", "country", "income"]}},
    "importance": {"method": "permutation", "features": {
        "genre": {"importance": 0.4, "rank": 1}, "runtime": {"importance": 0.25, "rank": 2},
        "country": {"importance": 0.2, "rank": 3}, "released": {"importance": 0.1, "rank": 4},
        "income": {"importance": 0.04, "rank": 5}, "flag": {"importance": 0.01, "rank": 6}}},
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "environments").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "pyproject.toml").write_text("[tool.buildenv]\n", encoding="utf-8")
    (root / "environments" / "prod.yaml").write_text(PROD_YAML, encoding="utf-8")
    (root / "environments" / "next.yaml").write_text(NEXT_YAML, encoding="utf-8")
    pq.write_table(items(1), root / "data" / "items.parquet")
    pq.write_table(items(2, genre_p=(0.25, 0.3, 0.35, 0.1)), root / "data" / "items-next.parquet")
    pq.write_table(people(3), root / "data" / "people.parquet")
    _, problems = lock_environments(Multiverse(Project(root)), ["prod", "next"])
    assert not problems, problems
    lineage = root / "dist" / "model" / "prod" / "buildenv.json"
    lineage.parent.mkdir(parents=True)
    lineage.write_text(json.dumps(LINEAGE), encoding="utf-8")
    return root


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["drift", *args, "--root", str(root)])
    return result.exit_code, result.stdout


def candidate(root: Path, name: str, table: pa.Table) -> str:
    pq.write_table(table, root / "data" / name)
    return f"data/{name}"


def yaml_line(text: str, needle: str, after: str | None = None) -> int:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


def rounded(value):
    """Floats to 10 significant digits: batch-wise means differ in the last bits only."""
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def run(root: Path, uri: str, dataset: str = "items", **kw) -> drift.DriftResult:
    return drift.run_drift(Project(root), "prod", dataset, against=uri, **kw)


# --- metrics ---------------------------------------------------------------------------------

def test_metrics_match_their_definitions():
    from scipy.spatial.distance import jensenshannon

    p, q = np.array([50.0, 30, 20, 0]), np.array([10.0, 30, 40, 20])
    assert statistics.jsd(p, p) == 0.0
    assert statistics.jsd(np.array([1.0, 0]), np.array([0.0, 1])) == 1.0
    assert statistics.jsd(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    value, at = statistics.linf(p, q)
    assert (value, at) == (pytest.approx(0.4), 0)
    pn, qn = np.maximum(p / 100, 1e-4), np.maximum(q / 100, 1e-4)
    assert statistics.psi(p, q) == pytest.approx(float(np.sum((qn - pn) * np.log(qn / pn))))


# --- alerts ----------------------------------------------------------------------------------

def test_unshifted_resample_fires_nothing_and_still_records(repo: Path):
    uri = candidate(repo, "items-resample.parquet", items(11))
    code, out = cli(repo, "prod", "--dataset", "items", "--against", uri)
    assert code == 0, out
    assert "no drift beyond the thresholds (5 columns compared)" in out
    assert "suppressed" not in out
    stats_files = list((repo / ".buildenv" / "drift" / "prod").glob("items-*.json"))
    assert len(stats_files) == 1 and len(stats_files[0].stem.split("-")[1]) == 12
    stats = json.loads(stats_files[0].read_text())
    assert stats["format_version"] == 1 and stats["alerts"] == []
    assert set(stats["columns"]) == {"item_id", "genre", "runtime", "released", "flag"}
    assert stats["columns"]["genre"]["metrics"]["linf"] < 0.05


def test_categorical_shift_names_value_numbers_threshold_and_line(repo: Path):
    base, new = items(1), items(12, genre_p=(0.25, 0.3, 0.35, 0.1))
    uri = candidate(repo, "items-genre.parquet", new)
    result = run(repo, uri)
    [alert] = [a for a in result.active if a.column == "genre"]
    old_c, new_c = (
        {k: v / N for k, v in zip(*np.unique(t.column("genre").to_pylist(), return_counts=True))}
        for t in (base, new))
    expected = max(abs(new_c[g] - old_c[g]) for g in GENRES)
    assert alert.code == "BE601" and alert.statistic == "linf"
    assert alert.value == pytest.approx(expected)
    assert (f"items.genre: 'horror' is now the most frequent value ({new_c['horror']:.1%} of rows, "
            f"was 'comedy' at {old_c['comedy']:.1%})") in alert.message
    assert f"L∞ {formatting.fmt_stat(expected, 0.05)} > 0.05 (monitoring.drift.columns.genre.linf at " \
           f"environments/prod.yaml:{yaml_line(PROD_YAML, 'genre: {linf', 'columns:')})" \
        in alert.message
    d = alert.diagnostic()
    assert (d.path, d.line) == ("environments/prod.yaml",
                                yaml_line(PROD_YAML, "genre: {linf", "monitoring:"))
    assert d.col == PROD_YAML.splitlines()[d.line - 1].index("linf") + 1
    assert alert.hints[0] == "used by model@prod (importance 0.40, rank 1 of 6)"
    assert f"set datasets.items.uri to '{uri}' in environments/prod.yaml, then run " \
           "`buildenv lock prod`" in alert.hints[1]
    suggested = formatting.suggest_threshold(expected, True)
    assert suggested > expected
    assert alert.hints[2] == (f"or raise the threshold: `linf: {suggested}` at "
                              f"environments/prod.yaml:{d.line}")


def test_numeric_shift_reports_direction_and_size_in_units(repo: Path):
    new = items(13, runtime_shift=20)
    uri = candidate(repo, "items-runtime.parquet", new)
    result = run(repo, uri)
    [alert] = [a for a in result.active if a.column == "runtime"]
    old_mean = np.nanmean(items(1).column("runtime").to_numpy(zero_copy_only=False))
    new_mean = np.nanmean(new.column("runtime").to_numpy(zero_copy_only=False))
    delta = new_mean - old_mean
    assert alert.code == "BE602" and alert.statistic == "psi" and alert.value > 0.2
    assert (f"items.runtime: mean rose {old_mean:.1f} → {new_mean:.1f} (+{delta:.1f}, "
            f"{delta / old_mean * 100:+.0f}%)") in alert.message
    assert "(monitoring.drift.numeric.psi at environments/prod.yaml:" in alert.message
    assert alert.diagnostic().line == yaml_line(PROD_YAML, "numeric: {psi")
    # the per-column override sets only null_fraction: psi comes from the numeric default
    assert "or allow it in prod: set monitoring.drift.columns.runtime.psi to" in alert.hints[2]


def test_null_fraction_and_new_domain_values(repo: Path):
    new = items(14, runtime_nulls=0.2, extra_genre=("western", 57))
    uri = candidate(repo, "items-nulls.parquet", new)
    result = run(repo, uri)
    codes = {(a.code, a.column) for a in result.active}
    assert ("BE604", "runtime") in codes and ("BE603", "genre") in codes
    nulls = next(a for a in result.active if a.code == "BE604")
    old_nf = items(1).column("runtime").null_count / N
    new_nf = new.column("runtime").null_count / N
    assert f"null fraction rose {old_nf:.1%} → {new_nf:.1%}" in nulls.message
    assert nulls.diagnostic().line == yaml_line(PROD_YAML, "runtime: {null_fraction")
    domain = next(a for a in result.active if a.code == "BE603")
    assert "57 of 4,000 rows (1.4%) have values outside the declared domain: 'western' (57 rows)" \
        in domain.message
    assert domain.diagnostic().line == yaml_line(PROD_YAML, "genre: {dtype")
    assert "add 'western' to the domain of items.genre" in domain.hints[-1]


def test_unimportant_and_unused_columns_are_suppressed_but_counted(repo: Path):
    uri = candidate(repo, "items-minor.parquet", items(15, flag_p=0.7, id_offset=10**6))
    code, out = cli(repo, "prod", "--dataset", "items", "--against", uri)
    assert code == 0, out
    assert ("2 alerts suppressed: unimportant features (flag) and features no model takes as "
            "input (item_id); --all shows them") in out
    assert "BE60" not in out
    code, out = cli(repo, "prod", "--dataset", "items", "--against", uri, "--all")
    assert code == 0
    assert "note[BE601]: items.flag:" in out and "[suppressed: importance 0.01 < " \
        "min_importance 0.05]" in out
    assert "note[BE602]: items.item_id: mean rose" in out
    code, out = cli(repo, "prod", "--dataset", "items", "--against", uri, "--format", "sarif",
                    "--all")
    results = json.loads(out)["runs"][0]["results"]
    assert all(r["suppressions"][0]["kind"] == "external" for r in results) and len(results) == 2


def test_without_models_nothing_is_suppressed(repo: Path):
    (repo / "dist" / "model" / "prod" / "buildenv.json").unlink()
    uri = candidate(repo, "items-minor.parquet", items(15, flag_p=0.7))
    code, out = cli(repo, "prod", "--dataset", "items", "--against", uri)
    assert code == 1
    assert "note: no model is built against prod" in out and "error[BE601]: items.flag" in out


def test_alerts_are_ranked_by_importance(repo: Path):
    uri = candidate(repo, "items-both.parquet",
                    items(16, genre_p=(0.25, 0.3, 0.35, 0.1), runtime_shift=40))
    result = run(repo, uri)
    assert [a.column for a in result.active][:2] == ["genre", "runtime"]
    code, out = cli(repo, "prod", "--dataset", "items", "--against", uri, "--format", "json")
    payload = json.loads(out)
    assert code == 1 and payload["exit_code"] == 1
    assert [a["column"] for a in payload["alerts"]][:2] == ["genre", "runtime"]
    assert payload["diagnostics"][0]["code"] == "BE601"


def test_against_lock_and_csv_candidates(repo: Path):
    code, out = cli(repo, "prod", "--dataset", "items", "--against-lock", "next")
    assert code == 1 and "items.genre: 'horror' is now the most frequent value" in out
    assert "if next's version is expected, adopt it: set datasets.items.uri to " \
           "'data/items-next.parquet'" in out
    pacsv.write_csv(items(17, runtime_shift=30), repo / "data" / "items.csv")
    result = run(repo, "data/items.csv")
    assert result.candidate.format == "csv"
    assert any(a.column == "runtime" and a.code == "BE602" for a in result.active)


def test_usage_errors_exit_2(repo: Path):
    assert cli(repo, "prod", "--dataset", "items")[0] == 2
    assert cli(repo, "prod", "--dataset", "items", "--against", "x.parquet",
               "--against-lock", "next")[0] == 2
    assert cli(repo, "prod", "--dataset", "itmes", "--against-lock", "next")[0] == 2
    assert cli(repo, "prod", "--dataset", "items", "--against", "data/missing.parquet")[0] == 2
    (repo / "environments" / "next.lock.json").unlink()
    assert cli(repo, "prod", "--dataset", "items", "--against-lock", "next")[0] == 2


def test_streaming_is_exact_and_independent_of_batch_size(repo: Path):
    uri = candidate(repo, "items-runtime.parquet", items(13, runtime_shift=5))
    one = run(repo, uri, use_cache=False)
    small = run(repo, uri, batch_rows=333, use_cache=False)
    assert rounded(one.stats["columns"]) == rounded(small.stats["columns"])
    # a sample smaller than the data: edges are approximate, bin counts still exact (2nd pass)
    sampled = run(repo, uri, sample_size=500, batch_rows=700, use_cache=False)
    hist = sampled.stats["columns"]["runtime"]["baseline"]["histogram"]
    values = items(1).column("runtime").drop_null().to_numpy()
    cuts = [np.count_nonzero(values < e) for e in hist["edges"]]
    assert hist["counts"] == np.diff([0, *cuts, len(values)]).tolist()
    cached = run(repo, uri, sample_size=500, batch_rows=700)
    again = run(repo, uri, sample_size=500, batch_rows=700)  # baseline from the cache
    assert cached.stats["columns"] == again.stats["columns"] == sampled.stats["columns"]


def test_stats_and_html_paths(repo: Path, tmp_path: Path):
    uri = candidate(repo, "items-genre.parquet", items(12, genre_p=(0.25, 0.3, 0.35, 0.1)))
    stats, page = tmp_path / "s.json", tmp_path / "r.html"
    code, _ = cli(repo, "prod", "--dataset", "items", "--against", uri, "--stats", str(stats),
                  "--html", str(page))
    assert code == 1
    data = json.loads(stats.read_text())
    assert data["summary"]["alerts"] >= 1 and data["candidate"]["uri"] == uri
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


# --- privacy -----------------------------------------------------------------------------------

def test_rare_restricted_values_never_appear_anywhere(repo: Path, tmp_path: Path):
    # high incomes shrink: only the planted outlier stays in the locked version's top bin
    uri = candidate(repo, "people-new.parquet", people(21, country_p=(0.2, 0.5, 0.2, 0.1),
                                                       sentinel=True, squash=True))
    outputs = []
    for fmt in ("text", "json", "sarif"):
        stats, page = tmp_path / f"{fmt}.json", tmp_path / f"{fmt}.html"
        code, out = cli(repo, "prod", "--dataset", "people", "--against", uri, "--format", fmt,
                        "--all", "--stats", str(stats), "--html", str(page))
        assert code == 1, out
        outputs += [out, stats.read_text(), page.read_text()]
    everything = "\n".join(outputs)
    assert "'GB' is now the most frequent value" in everything  # large groups are named
    assert "3 of 4,000 rows (0.1%) have values outside the declared domain: 1 value(s) seen in " \
           "fewer than 10 rows each (3 rows; not shown: restricted dataset)" in everything
    for secret in (SENTINEL_VALUE, "987654", "987,654", "9.8765e+05", "9.877e+05"):
        assert secret not in everything
    assert "people.income: mean fell" in everything
    assert "largest change in ≥ 43,000: 9.5% → fewer than 10 rows of values" in everything
    data = json.loads(outputs[1])
    income = data["columns"]["income"]
    assert income["candidate"]["histogram"]["counts"][-1] is None
    assert "min" not in income["candidate"] and "max" not in income["candidate"]
    assert set(income["candidate"]["quantiles"]) == {"p10", "p25", "p50", "p75", "p90"}
    assert all(float(f"{v:.2g}") == v for v in income["candidate"]["quantiles"].values())
    assert data["columns"]["country"]["candidate"]["other"]["count"] == 3


def test_yaml_text_of_fixture_is_stable():
    # line numbers above are computed from PROD_YAML itself; guard the assumptions they rely on
    assert textwrap.dedent(PROD_YAML) == PROD_YAML
    assert dt.date(2020, 1, 1) == dt.date(1970, 1, 1) + dt.timedelta(days=18262)


def test_drift_check_for_retrain(repo: Path):
    """`buildenv retrain` calls drift_check with the environment already pointing at new data."""
    uri = candidate(repo, "items-retrain.parquet",
                    items(18, genre_p=(0.25, 0.3, 0.35, 0.1), flag_p=0.7))
    text = (repo / "environments" / "prod.yaml").read_text().replace("data/items.parquet", uri)
    (repo / "environments" / "prod.yaml").write_text(text)
    res = Multiverse(Project(repo)).resolve("prod")
    found = drift.drift_check(Project(repo), res, "items", "data/items.parquet")
    errors = [d for d in found if d.severity.value == "error"]
    notes = [d for d in found if d.severity.value == "note"]
    assert [d.code for d in errors] == ["BE601"] and "items.genre" in errors[0].message
    assert [d.code for d in notes] == ["BE601"] and "items.flag" in notes[0].message
    assert "relock: `buildenv lock prod`" in errors[0].hints[1]
    assert list((repo / ".buildenv" / "drift" / "prod").glob("items-*.json"))
    assert drift.drift_check(Project(repo), res, "items", "data/gone.parquet")[0].code == "BE053"


# --- the HTML report in a real browser ------------------------------------------------------
# Headless Chromium renders the page; the screenshot must show the alerts above coloured plots.
# CI installs the browser with `apt-get install -y --no-install-recommends chromium`.

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])


def _mask(pixels: np.ndarray, hex_color: str, tolerance: int = 12) -> np.ndarray:
    return (np.abs(pixels.astype(int) - _rgb(hex_color)) <= tolerance).all(axis=2)


def _screenshot(page: Path, out: Path) -> np.ndarray:
    image = pytest.importorskip("PIL.Image")
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--hide-scrollbars", f"--screenshot={out}",
                    "--window-size=1200,2000", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(image.open(out).convert("RGB"))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI: apt-get install -y "
                    "--no-install-recommends chromium)")
@pytest.mark.parametrize("dataset", ["items", "people"])
def test_html_report_renders_alerts_then_plots(repo: Path, tmp_path: Path, dataset: str):
    table = (items(12, genre_p=(0.25, 0.3, 0.35, 0.1), runtime_shift=30) if dataset == "items"
             else people(21, country_p=(0.2, 0.5, 0.2, 0.1), sentinel=True))
    uri = candidate(repo, f"{dataset}-new.parquet", table)
    page = tmp_path / "report.html"
    code, _ = cli(repo, "prod", "--dataset", dataset, "--against", uri, "--html", str(page))
    assert code == 1
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text and "@import" not in text
    pixels = _screenshot(page, tmp_path / "shot.png")
    base, cand = _mask(pixels, BASE_COLOR), _mask(pixels, CAND_COLOR)
    # bars, not just the 11x11 legend swatches
    assert base.sum() > 2000 and cand.sum() > 2000
    bar_rows = np.flatnonzero((base.sum(axis=1) > 30) | (cand.sum(axis=1) > 30))
    alert_rows = np.flatnonzero(_mask(pixels, "#fdf1ef", 3).sum(axis=1) > 300)
    assert len(bar_rows) and len(alert_rows)
    assert alert_rows[0] < bar_rows[0], "alerts are shown above the plots"
    # every plot has both versions side by side: candidate pixels appear within the first plot
    first_plot = slice(bar_rows[0], bar_rows[0] + 260)
    assert base[first_plot].sum() > 300 and cand[first_plot].sum() > 300
