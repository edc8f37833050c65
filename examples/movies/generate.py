"""Generate the example multiverse's data: a small, seeded movie-streaming world.

One world is simulated once (movies, users, a 15-month stream of ratings), then
snapshotted at the end of each quarter, the way a warehouse export would be:

    data/movies/2026-06.parquet            catalog released by 2026-06-30
    data/movies/2026-09.parquet            + Q3 releases (more horror/animation), late critic scores
    data/movies/2026-09-genre-v2.parquet   same rows, genre taxonomy v2: drama -> drama |
                                           crime-drama, sci-fi -> sci-fi | space-opera
    data/users/2026-06.parquet             users signed up by the cutoff
    data/users/2026-09.parquet             + Q3 signups (growth push in BR/IN/MX, younger)
    data/ratings/2026-06.parquet           trailing 12 months of ratings before the cutoff
    data/ratings/2026-09.parquet           idem, one quarter later (more mobile traffic)
    data/labels/genre-v1.json              Label Studio export: genre annotations of the Q3
                                           catalog under taxonomy v1, annotation UI v1
    data/labels/genre-v2.json              Label Studio export, taxonomy v2, UI v2: the split
                                           genres relabeled, a QA sample, new titles
    data/labels/genre-v1-to-v2.sssom.tsv   SSSOM mapping of taxonomy v1 classes into v2
    data/tables/ratings/                   Delta table (delta-rs): the ratings stream, a version
                                           per change -- v0 the Q2 window, v1 + Q3, v2 the
                                           12-month retention delete, v3 a user's erasure
    data/tables/iceberg/                   Iceberg (PyIceberg, SQLite catalog `catalog.db`):
                                           `catalog.movies`, the 2026-09 catalog partitioned by
                                           genre on `main`, and branch `relabel`: a QA pass that
                                           corrected the genre of 120 titles

`liked` depends on genre (the fine-grained, v2 genre), runtime, user age x genre,
country, plan, device, and a latent movie quality that `critic_score` measures
with noise; a latent per-user generosity is never observed. So served features
carry real signal and `critic_score` adds lift on top of them.

The genre annotations come from a simulated annotation team: several annotators per UI
version, each right with their own accuracy, some titles labeled by two or three of them
(agreement can be measured; ties happen), a few cancelled annotations. UI v2 is run by new
annotators plus two from v1 who only get titles they did not label before (no double
exposure). Labels use their own random stream, so the Parquet files do not depend on them.

Deterministic: the same seed gives byte-identical files (no timestamps or pandas
metadata in the Parquet footer; fixed writer options; JSON with fixed key order). The tables
are the exception the table formats make: their writers name files by random UUIDs and record
commit times, so a table is the same *version by version* (the same rows at each version,
snapshot and ref), not byte for byte. Iceberg locations are written relative to the data
directory's parent (the repository root), so any checkout reads them.

    python examples/movies/generate.py [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SEED = 20260630
REPO_ROOT = Path(__file__).resolve().parents[2]

STREAM_START = dt.date(2025, 7, 1)
STREAM_END = dt.date(2026, 9, 30)
CUTOFFS = {"2026-06": dt.date(2026, 6, 30), "2026-09": dt.date(2026, 9, 30)}
WINDOW_DAYS = 365
CATALOG_DATE = dt.date(2025, 7, 1)  # older titles are released before this

N_MOVIES = 3400
N_USERS = 7400
N_EVENTS = 64_000

# Genre taxonomy v1, most common first; frequencies are Zipf-like (s = 1.1).
GENRES = ["drama", "comedy", "action", "thriller", "documentary", "horror", "romance", "sci-fi",
          "animation", "family", "fantasy", "mystery", "war", "western", "musical"]
# Taxonomy v2 splits two v1 genres; the share of each parent that is really the new sub-genre.
SPLITS = {"drama": ("crime-drama", 0.35), "sci-fi": ("space-opera", 0.40)}
# Summer releases lean to horror and animation (mild drift in the 2026-09 catalog).
SUMMER_BOOST = {"horror": 2.2, "animation": 1.8, "family": 1.4, "documentary": 0.6}

# Effects on the log-odds of `liked`, by fine-grained genre.
GENRE_EFFECT = {
    "drama": 0.3, "crime-drama": 1.35, "comedy": -0.2, "action": 0.15, "thriller": 0.05,
    "documentary": 1.2, "horror": -1.2, "romance": -0.6, "sci-fi": -0.3, "space-opera": 1.05,
    "animation": 0.9, "family": 0.45, "fantasy": -0.15, "mystery": 0.3, "war": 0.7,
    "western": -0.75, "musical": -1.05,
}
# Per-year-of-age slope, centred on 35: the young like horror, older viewers drama and war.
AGE_SLOPE = {"horror": -0.05, "animation": -0.02, "drama": 0.03, "crime-drama": 0.03,
             "war": 0.04, "documentary": 0.02, "action": -0.015}
RUNTIME_MEAN = {"drama": 118, "comedy": 101, "action": 124, "thriller": 112, "documentary": 92,
                "horror": 97, "romance": 108, "sci-fi": 121, "animation": 94, "family": 99,
                "fantasy": 126, "mystery": 110, "war": 138, "western": 116, "musical": 119}
BUDGET_SCALE = {"action": 90.0, "sci-fi": 75.0, "fantasy": 80.0, "animation": 70.0, "war": 45.0,
                "family": 45.0, "documentary": 2.5, "horror": 12.0}

COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "CA", "ES", "MX", "JP", "IT", "NL", "AU", "SE"]
COUNTRY_EFFECT = {"US": 0.0, "GB": -0.15, "DE": -0.6, "FR": -0.4, "BR": 0.45, "IN": 0.7,
                  "CA": 0.0, "ES": 0.2, "MX": 0.4, "JP": -0.65, "IT": 0.05, "NL": -0.25,
                  "AU": 0.0, "SE": -0.2}
GROWTH_MARKETS = {"BR": 2.0, "IN": 2.3, "MX": 1.8}  # launch campaign from 2026-04
PLANS = ["basic", "standard", "premium"]
PLAN_EFFECT = {"basic": -0.1, "standard": 0.0, "premium": 0.2}
DEVICES = ["tv", "mobile", "web", "tablet"]
DEVICE_EFFECT = {"tv": 0.2, "mobile": -0.15, "web": 0.0, "tablet": 0.05}

ADJECTIVES = ["Silent", "Last", "Broken", "Golden", "Hidden", "Crimson", "Endless", "Lost",
              "Wild", "Midnight", "Electric", "Frozen", "Burning", "Quiet", "Distant", "Hollow",
              "Savage", "Gentle", "Iron", "Paper", "Velvet", "Northern", "Little", "Final"]
NOUNS = ["River", "Empire", "Garden", "Signal", "Harbor", "Kingdom", "Summer", "Witness",
         "Orbit", "Letter", "Engine", "Frontier", "Mirror", "Promise", "Storm", "Island",
         "Detective", "Machine", "Wedding", "Station", "Ghost", "Circus", "Verdict", "Horizon"]

EPOCH = dt.date(1970, 1, 1)


def _days(d: dt.date) -> int:
    return (d - EPOCH).days


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _lookup(table: dict, keys: np.ndarray, default: float = 0.0) -> np.ndarray:
    return np.array([table.get(k, default) for k in keys], dtype=np.float64)


# --- the world ---------------------------------------------------------------------------
def simulate_movies(rng: np.random.Generator) -> dict:
    n = N_MOVIES
    # ~88% back catalog (release year skewed to recent decades), ~12% new releases in the stream.
    is_new = rng.random(n) < 0.12
    back_age_days = np.minimum(rng.exponential(11.0 * 365.25, n), 95 * 365.25)
    release = np.where(
        is_new,
        _days(STREAM_START) + rng.integers(0, _days(STREAM_END) - _days(STREAM_START) + 1, n),
        _days(CATALOG_DATE) - 1 - back_age_days.astype(np.int64),
    ).astype(np.int64)
    release = np.maximum(release, _days(dt.date(1931, 1, 1)))

    summer = release >= _days(dt.date(2026, 7, 1))
    base = _zipf(len(GENRES), 1.1)
    boosted = base * np.array([SUMMER_BOOST.get(g, 1.0) for g in GENRES])
    boosted /= boosted.sum()
    genre = np.where(summer, rng.choice(GENRES, n, p=boosted), rng.choice(GENRES, n, p=base))
    fine = genre.copy()
    for parent, (child, share) in SPLITS.items():
        fine[(genre == parent) & (rng.random(n) < share)] = child

    runtime = np.clip(np.round(_lookup(RUNTIME_MEAN, genre, 110.0) + rng.normal(0, 17, n)),
                      62, 229).astype(np.float64)
    runtime[fine == "crime-drama"] += 9.0  # crime dramas run long
    runtime[rng.random(n) < 0.005] = np.nan  # ~0.5% unknown runtime

    quality = rng.normal(0.0, 1.0, n)
    critic = np.clip(np.round(62 + 14 * quality + rng.normal(0, 7, n), 1), 0, 100)
    reviewed_after = rng.integers(10, 60, n)  # critics publish days after release
    obscure = rng.random(n) < 0.035  # never reviewed

    year = np.array([(EPOCH + dt.timedelta(days=int(d))).year for d in release], dtype=np.int16)
    inflation = 1.025 ** np.clip(year.astype(np.float64) - 2026, -60, 0)
    budget = (_lookup(BUDGET_SCALE, genre, 25.0) * inflation * rng.lognormal(0, 0.8, n))
    budget = np.round(np.clip(budget, 0.05, 450.0), 2)
    budget[rng.random(n) < np.where(genre == "documentary", 0.35, 0.10)] = np.nan

    titles = []
    seen: dict[str, int] = {}
    adj = rng.integers(0, len(ADJECTIVES), n)
    noun = rng.integers(0, len(NOUNS), n)
    form = rng.integers(0, 4, n)
    for a, b, f in zip(adj, noun, form):
        stem = (f"The {ADJECTIVES[a]} {NOUNS[b]}", f"{ADJECTIVES[a]} {NOUNS[b]}",
                f"{NOUNS[b]} of the {ADJECTIVES[a]}", f"A {ADJECTIVES[a]} {NOUNS[b]}")[f]
        seen[stem] = seen.get(stem, 0) + 1
        titles.append(stem if seen[stem] == 1 else f"{stem} {_roman(seen[stem])}")

    # movie ids: sparse, in release order (older titles have smaller ids)
    order = np.argsort(release, kind="stable")
    movie_id = np.empty(n, dtype=np.int64)
    movie_id[order] = 100_000 + np.cumsum(rng.integers(1, 40, n))
    popularity = rng.permutation(_zipf(n, 0.9)) * np.exp(0.35 * quality)
    popularity[is_new] *= 3.0  # new releases are promoted
    return {
        "movie_id": movie_id, "title": np.array(titles, dtype=object), "genre": genre,
        "fine_genre": fine, "release": release, "release_year": year, "runtime": runtime,
        "quality": quality, "critic": critic, "reviewed_after": reviewed_after,
        "obscure": obscure, "budget": budget, "popularity": popularity / popularity.sum(),
    }


def _roman(k: int) -> str:
    numerals = {2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX"}
    return numerals.get(k, str(k))


def simulate_users(rng: np.random.Generator) -> dict:
    n = N_USERS
    first, last = _days(dt.date(2018, 1, 1)), _days(STREAM_END)
    signup = (first + (last - first) * rng.random(n) ** 0.55).astype(np.int64)  # growing service
    recent = signup >= _days(dt.date(2026, 4, 1))
    base = _zipf(len(COUNTRIES), 1.0)
    push = base * np.array([GROWTH_MARKETS.get(c, 1.0) for c in COUNTRIES])
    push /= push.sum()
    country = np.where(recent, rng.choice(COUNTRIES, n, p=push), rng.choice(COUNTRIES, n, p=base))
    age = 17 + rng.gamma(3.2, 6.5, n) - np.where(recent, 3.0, 0.0)
    age = np.clip(np.round(age), 16, 90).astype(np.int16)
    plan = rng.choice(PLANS, n, p=[0.45, 0.40, 0.15])
    user_id = np.empty(n, dtype=np.int64)
    user_id[np.argsort(signup, kind="stable")] = 1 + np.arange(n, dtype=np.int64) * 3
    return {
        "user_id": user_id, "signup": signup, "country": country, "age": age, "plan": plan,
        "generosity": rng.normal(0.0, 0.45, n), "activity": rng.lognormal(0.0, 1.0, n),
    }


def simulate_ratings(rng: np.random.Generator, movies: dict, users: dict) -> dict:
    k = N_EVENTS
    u = rng.choice(N_USERS, k, p=users["activity"] / users["activity"].sum())
    m = rng.choice(N_MOVIES, k, p=movies["popularity"])
    lo = np.maximum(np.maximum(users["signup"][u], movies["release"][m]), _days(STREAM_START))
    hi = _days(STREAM_END)
    keep = lo <= hi
    u, m, lo = u[keep], m[keep], lo[keep]
    seconds = (lo * 86_400 + rng.random(len(u)) * ((hi + 1 - lo) * 86_400)).astype(np.int64)
    # one rating per (user, movie): the first
    key = u.astype(np.int64) * N_MOVIES + m
    order = np.lexsort((seconds, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    idx = order[first]
    u, m, seconds = u[idx], m[idx], seconds[idx]
    n = len(u)

    age = users["age"][u].astype(np.float64)
    late = seconds >= _days(dt.date(2026, 7, 1)) * 86_400
    p_mobile = np.clip(0.22 + 0.012 * (35 - age) + np.where(late, 0.08, 0.0), 0.05, 0.8)
    draw = rng.random(n)
    device = np.where(draw < p_mobile, "mobile",
                      rng.choice(["tv", "web", "tablet"], n, p=[0.55, 0.30, 0.15]))

    fine = movies["fine_genre"][m]
    runtime = np.nan_to_num(movies["runtime"][m], nan=110.0)
    logit = (
        -0.15
        + _lookup(GENRE_EFFECT, fine)
        + _lookup(AGE_SLOPE, fine) * (age - 35)
        - 0.035 * np.maximum(runtime - 125, 0) - 0.025 * np.maximum(90 - runtime, 0)
        + 0.012 * np.clip(2026 - movies["release_year"][m].astype(np.float64), 0, 40)  # classics
        + _lookup(COUNTRY_EFFECT, users["country"][u])
        + _lookup(PLAN_EFFECT, users["plan"][u])
        + _lookup(DEVICE_EFFECT, device)
        + 0.7 * movies["quality"][m]
        + users["generosity"][u]
    )
    liked = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return {"u": u, "m": m, "seconds": seconds, "device": device, "liked": liked}


# --- snapshots ---------------------------------------------------------------------------
def movies_table(movies: dict, cutoff: dt.date, taxonomy: str = "v1") -> pa.Table:
    c = _days(cutoff)
    rows = np.flatnonzero(movies["release"] <= c)
    rows = rows[np.argsort(movies["movie_id"][rows], kind="stable")]
    reviewed = movies["release"][rows] + movies["reviewed_after"][rows] <= c
    reviewed &= ~movies["obscure"][rows]
    critic = np.where(reviewed, movies["critic"][rows], np.nan)
    genre = movies["fine_genre" if taxonomy == "v2" else "genre"][rows]
    return pa.table({
        "movie_id": pa.array(movies["movie_id"][rows], pa.int64()),
        "title": pa.array(movies["title"][rows].tolist(), pa.string()),
        "genre": pa.array(genre.tolist(), pa.string()),
        "release_year": pa.array(movies["release_year"][rows], pa.int16()),
        "runtime_minutes": pa.array(movies["runtime"][rows], pa.float64(), from_pandas=True),
        "critic_score": pa.array(critic, pa.float64(), from_pandas=True),
        "budget_musd": pa.array(movies["budget"][rows], pa.float64(), from_pandas=True),
    })


def users_table(users: dict, cutoff: dt.date) -> pa.Table:
    rows = np.flatnonzero(users["signup"] <= _days(cutoff))
    rows = rows[np.argsort(users["user_id"][rows], kind="stable")]
    return pa.table({
        "user_id": pa.array(users["user_id"][rows], pa.int64()),
        "country": pa.array(users["country"][rows].tolist(), pa.string()),
        "age": pa.array(users["age"][rows], pa.int16()),
        "plan": pa.array(users["plan"][rows].tolist(), pa.string()),
        "signup_date": pa.array(users["signup"][rows].astype(np.int32), pa.date32()),
    })


def ratings_table(ratings: dict, movies: dict, users: dict, cutoff: dt.date) -> pa.Table:
    end = (_days(cutoff) + 1) * 86_400
    start = end - WINDOW_DAYS * 86_400
    rows = np.flatnonzero((ratings["seconds"] >= start) & (ratings["seconds"] < end))
    uid = users["user_id"][ratings["u"][rows]]
    mid = movies["movie_id"][ratings["m"][rows]]
    rows = rows[np.lexsort((mid, uid, ratings["seconds"][rows]))]
    return pa.table({
        "user_id": pa.array(users["user_id"][ratings["u"][rows]], pa.int64()),
        "movie_id": pa.array(movies["movie_id"][ratings["m"][rows]], pa.int64()),
        "rating_ts": pa.array(ratings["seconds"][rows] * 1_000_000, pa.timestamp("us", tz="UTC")),
        "device": pa.array(ratings["device"][rows].tolist(), pa.string()),
        "liked": pa.array(ratings["liked"][rows], pa.bool_()),
    })


# --- genre annotations (Label Studio exports) ------------------------------------------------
GENRES_V2 = ["drama", "crime-drama", "comedy", "action", "thriller", "documentary", "horror",
             "romance", "sci-fi", "space-opera", "animation", "family", "fantasy", "mystery",
             "war", "western", "musical"]
ANNOTATORS_V1 = {101: 0.93, 102: 0.90, 103: 0.88, 104: 0.85, 105: 0.92, 106: 0.80}
ANNOTATORS_V2 = {201: 0.94, 202: 0.91, 203: 0.89, 204: 0.87, 103: 0.90, 105: 0.93}
LABEL_WINDOWS = {"1": (dt.datetime(2026, 7, 1), dt.datetime(2026, 9, 1)),
                 "2": (dt.datetime(2026, 9, 1), dt.datetime(2026, 9, 30))}
SIBLING = {"drama": "crime-drama", "crime-drama": "drama", "sci-fi": "space-opera",
           "space-opera": "sci-fi"}


def _annotation(ids: list[int], who: int, choice: str | None, when: dt.datetime,
                lead: float, cancelled: bool) -> dict:
    ids[0] += 1
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + "Z"
    result = [] if cancelled or choice is None else [{
        "from_name": "genre", "to_name": "title", "type": "choices",
        "value": {"choices": [choice]}}]
    return {"id": ids[0], "completed_by": who, "created_at": stamp, "lead_time": lead,
            "was_cancelled": cancelled, "result": result}


def _judge(rng: np.random.Generator, truth: str, accuracy: float, classes: list[str]) -> str:
    if rng.random() < accuracy:
        return truth
    if truth in SIBLING and SIBLING[truth] in classes and rng.random() < 0.5:
        return SIBLING[truth]  # the new sub-genres are the easiest to confuse
    others = [c for c in classes if c != truth]
    return others[int(rng.integers(0, len(others)))]


def _tasks(rng: np.random.Generator, catalog: pa.Table, chosen: np.ndarray, truth_column: str,
           ui: str, annotators: dict[int, float], classes: list[str],
           seen: dict[int, set[int]] | None, ids: list[int]) -> list[dict]:
    """Tasks for the catalog rows in `chosen`; `seen` maps annotator -> movies they labeled
    under another UI (never given to them again: no double exposure)."""
    start, end = LABEL_WINDOWS[ui]
    span = (end - start).total_seconds()
    who_all = np.array(sorted(annotators))
    movie_ids = catalog.column("movie_id").to_pylist()
    titles = catalog.column("title").to_pylist()
    truths = catalog.column(truth_column).to_pylist()
    tasks = []
    for row in np.flatnonzero(chosen).tolist():
        movie = movie_ids[row]
        allowed = [int(w) for w in who_all if seen is None or movie not in seen.get(int(w), ())]
        k = min(len(allowed), int(rng.choice([1, 2, 3], p=[0.68, 0.27, 0.05])))
        picked = sorted(int(w) for w in rng.choice(allowed, k, replace=False))
        anns = []
        for who in picked:
            when = start + dt.timedelta(seconds=int(rng.random() * span))
            cancelled = bool(rng.random() < 0.02)
            choice = None if cancelled else _judge(rng, truths[row], annotators[who], classes)
            anns.append(_annotation(ids, who, choice, when, round(float(rng.gamma(2.0, 9.0)), 1),
                                    cancelled))
        tasks.append({"id": 50_000 * int(ui) + row + 1,
                      "data": {"movie_id": movie, "title": titles[row]},
                      "annotations": anns})
    return tasks


def _export_json(tasks: list[dict]) -> str:
    """A Label Studio JSON export, one task per line (byte-stable)."""
    lines = [json.dumps(t, ensure_ascii=False, separators=(",", ":")) for t in tasks]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def label_exports(seed: int, movies: dict) -> dict[str, str]:
    """The genre annotation exports (taxonomy v1, UI 1; taxonomy v2, UI 2) and the SSSOM
    mapping between the taxonomies, as file name -> text."""
    rng = np.random.default_rng([seed, 2])
    catalog = movies_table(movies, CUTOFFS["2026-09"])
    fine = movies_table(movies, CUTOFFS["2026-09"], taxonomy="v2").column("genre")
    catalog = catalog.append_column("fine_genre", fine)
    n = catalog.num_rows
    ids = [0]
    in_v1 = rng.random(n) < 0.9
    v1 = _tasks(rng, catalog, in_v1, "genre", "1", ANNOTATORS_V1, GENRES, None, ids)
    seen: dict[int, set[int]] = {}
    for task in v1:
        for ann in task["annotations"]:
            seen.setdefault(ann["completed_by"], set()).add(task["data"]["movie_id"])
    split = np.isin(np.array(catalog.column("genre").to_pylist()), list(SPLITS))
    draw = rng.random(n)
    in_v2 = np.where(split, draw < 0.7, np.where(in_v1, draw < 0.08, draw < 0.5))
    v2 = _tasks(rng, catalog, in_v2, "fine_genre", "2", ANNOTATORS_V2, GENRES_V2, seen, ids)
    rows = ["# curie_map:", '#   genre-v1: "urn:example:taxonomy:genre:1:"',
            '#   genre-v2: "urn:example:taxonomy:genre:2:"',
            '# mapping_set_id: "urn:example:mappings:genre-v1-to-v2"',
            "subject_id\tpredicate_id\tobject_id\tmapping_justification"]
    for genre in GENRES:
        targets = [genre, SPLITS[genre][0]] if genre in SPLITS else [genre]
        predicate = "skos:narrowMatch" if genre in SPLITS else "skos:exactMatch"
        rows += [f"genre-v1:{genre}\t{predicate}\tgenre-v2:{t}\tsemapv:ManualMappingCuration"
                 for t in targets]
    return {"genre-v1.json": _export_json(v1), "genre-v2.json": _export_json(v2),
            "genre-v1-to-v2.sssom.tsv": "\n".join(rows) + "\n"}


def write(table: pa.Table, path: Path) -> None:
    """Byte-stable Parquet: no pandas metadata, fixed codec, level, page and row-group sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata(None)
    pq.write_table(
        table, path, compression="zstd", compression_level=9, use_dictionary=True,
        write_statistics=True, version="2.6", data_page_version="1.0",
        data_page_size=1 << 20, row_group_size=1 << 20, store_schema=True,
    )


def generate(out: Path, seed: int = SEED) -> list[Path]:
    rng = np.random.default_rng(seed)
    movies = simulate_movies(rng)
    users = simulate_users(rng)
    ratings = simulate_ratings(rng, movies, users)
    written = []
    for version, cutoff in CUTOFFS.items():
        for name, table in (("movies", movies_table(movies, cutoff)),
                            ("users", users_table(users, cutoff)),
                            ("ratings", ratings_table(ratings, movies, users, cutoff))):
            path = out / name / f"{version}.parquet"
            write(table, path)
            written.append(path)
    path = out / "movies" / "2026-09-genre-v2.parquet"
    write(movies_table(movies, CUTOFFS["2026-09"], taxonomy="v2"), path)
    written.append(path)
    for name, text in label_exports(seed, movies).items():
        path = out / "labels" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    written += write_tables(out, seed, movies, users, ratings)
    return written


# --- tables with their own history (Delta Lake, Iceberg) -------------------------------------
RELABELED = 120  # titles the QA pass on the Iceberg branch corrects
ERASED_USER_RANK = 7  # the erasure request of v3: the 7th most active user


def ratings_versions(movies: dict, users: dict, ratings: dict) -> list[tuple[str, pa.Table]]:
    """The ratings stream's commits: (what, rows written or the delete predicate's rows)."""
    q2 = ratings_table(ratings, movies, users, CUTOFFS["2026-06"])
    q3_all = ratings_table(ratings, movies, users, CUTOFFS["2026-09"])
    start_q3 = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    q3 = q3_all.filter(pc.greater_equal(q3_all["rating_ts"], pa.scalar(
        start_q3, pa.timestamp("us", tz="UTC"))))
    return [("create", q2), ("append", q3)]


def write_tables(out: Path, seed: int, movies: dict, users: dict, ratings: dict) -> list[Path]:
    """The Delta ratings stream and the Iceberg movie catalog (see the module docstring)."""
    import os
    import shutil

    from deltalake import DeltaTable, write_deltalake

    tables = out / "tables"
    shutil.rmtree(tables, ignore_errors=True)
    stream = tables / "ratings"
    for what, rows in ratings_versions(movies, users, ratings):
        write_deltalake(str(stream), rows, mode="append" if what == "append" else "error")
    table = DeltaTable(str(stream))
    window_start = dt.date(2025, 10, 1)  # 12 months before the 2026-09 cutoff
    table.delete(f"rating_ts < '{window_start.isoformat()}T00:00:00Z'")
    active = pc.value_counts(table.to_pyarrow_table(columns=["user_id"])["user_id"])
    counts = sorted(((c["counts"].as_py(), c["values"].as_py()) for c in active),
                    key=lambda item: (-item[0], item[1]))
    table.delete(f"user_id = {counts[ERASED_USER_RANK - 1][1]}")

    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.transforms import IdentityTransform

    here = os.getcwd()
    (tables / "iceberg").mkdir(parents=True, exist_ok=True)
    os.chdir(out.parent)  # locations relative to the repository root
    try:
        base = f"{out.name}/tables/iceberg"
        catalog = SqlCatalog("default", uri=f"sqlite:///{base}/catalog.db",
                             warehouse=f"{base}/warehouse")
        catalog.create_namespace("catalog")
        current = movies_table(movies, CUTOFFS["2026-09"])
        iceberg = catalog.create_table("catalog.movies", schema=current.schema)
        with iceberg.update_spec() as spec:
            spec.add_field("genre", IdentityTransform(), "genre")
        iceberg.append(current)
        main = iceberg.current_snapshot().snapshot_id
        iceberg.manage_snapshots().create_branch(main, "relabel").commit()
        rng = np.random.default_rng([seed, 23])
        picked = np.sort(rng.choice(current.num_rows, RELABELED, replace=False))
        fixed = current.take(pa.array(picked))
        genres = fixed["genre"].to_pylist()
        corrected = [GENRES[(GENRES.index(g) + 1 + int(rng.integers(0, len(GENRES) - 1)))
                            % len(GENRES)] for g in genres]
        fixed = fixed.set_column(fixed.schema.get_field_index("genre"), "genre",
                                 pa.array(corrected, pa.string()))
        ids = ", ".join(str(v) for v in fixed["movie_id"].to_pylist())
        iceberg.overwrite(fixed, overwrite_filter=f"movie_id in ({ids})", branch="relabel")
    finally:
        os.chdir(here)
    return sorted(p for p in tables.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data",
                        help="output directory (default: the repository's data/)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"world seed (default {SEED})")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.seed):
        if "tables" in path.parts:
            continue
        if path.suffix == ".parquet":
            print(f"{path}: {pq.read_metadata(path).num_rows} rows, {path.stat().st_size} bytes")
        else:
            print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
