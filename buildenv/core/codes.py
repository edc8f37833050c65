"""Stable diagnostic codes and what each one means (`buildenv explain CODE`).

Codes never change meaning once released; a test fails when the source uses a
code that has no entry here. Ranges: BE0xx environment and project files,
BE05x locks, BE1xx static checks of training code, BE2xx data validation,
BE3xx training, BE4xx verification against the serving stack, BE6xx drift,
BE5xx evaluation slices, label coverage and model cards, BE7xx promotion, BE75x images, BE80x the audit log, BE81x-BE84x private statistics,
synthetic data and peek, BE85x-BE87x label sets (their locks: BE057-BE059), BE88x executors;
BE06x partitioned datasets, BE07x table datasets, BE08x the object store and DVC pins, BE09x
derived datasets (BE34x their transforms), BE870-BE879 labeling functions, BE9xx importers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CODES", "Code", "explain"]


@dataclass(frozen=True)
class Code:
    title: str
    explanation: str


CODES: dict[str, Code] = {
    # --- environment files ---------------------------------------------------
    "BE001": Code("invalid YAML", "The file is not valid YAML. The location points at the token "
                  "the parser stopped on; the usual cause is bad indentation or an unclosed quote."),
    "BE002": Code("duplicate key", "A mapping has the same key twice. YAML loaders silently keep "
                  "the last one, which hides mistakes, so buildenv refuses. Keep one of them."),
    "BE003": Code("unknown key", "The key is not part of the environment format (docs/environment.md). "
                  "Check the spelling (a hint names the closest known key) or `buildenv schema`."),
    "BE004": Code("invalid value", "The value has the wrong type or is out of the allowed set. "
                  "The message says what was expected; `buildenv schema` lists every field."),
    "BE005": Code("missing key", "A required key is absent, e.g. a dataset without `uri` or a "
                  "column without `dtype`."),
    "BE006": Code("name does not match file", "An environment's `name` must equal its file stem "
                  "(environments/<name>.yaml), so that references (`extends`, --env, locks) are "
                  "unambiguous. Rename the file or fix `name`."),
    "BE007": Code("unknown parent", "`extends` names an environment that has no file in the "
                  "environments directory. The hint lists the closest existing name."),
    "BE008": Code("extends cycle", "Following `extends` leads back to an environment already in "
                  "the chain. Every file of the cycle is named; break it by removing one `extends`."),
    "BE009": Code("unknown dataset", "A reference (label, privacy.restricted, monitoring) names a "
                  "dataset the environment does not declare under `datasets`."),
    "BE010": Code("unknown column", "A reference names a column the dataset does not declare."),
    "BE011": Code("bad range", "`range: [lo, hi]` needs lo <= hi, numbers for numeric dtypes and "
                  "ISO 8601 strings for date/timestamp; bool and string columns take no range. "
                  "`null` leaves one end open (`[0, null]`), but not both ends."),
    "BE012": Code("bad domain", "`domain` lists the allowed values of a string, integer, float or "
                  "bool column; every value must have the column's type (a float such as 1.5 is "
                  "not an integer; float domains take finite numbers) and appear once."),
    "BE013": Code("unsupported format version", "The file declares a `schema:`/`lock_version:` "
                  "this buildenv does not know. Upgrade buildenv, or use a supported version."),
    "BE014": Code("unknown environment", "No environments/<name>.yaml exists for that name. "
                  "`buildenv envs` lists them."),
    "BE015": Code("dataset uri escapes the repository", "A relative dataset uri resolves outside "
                  "the repository root (e.g. `../../data.parquet`). Builds must be reproducible "
                  "from the repository: move the data inside it, or use an absolute file:// or "
                  "s3:// uri, which is pinned by the lock like any other."),
    "BE016": Code("invalid project configuration", "`[tool.buildenv]` in pyproject.toml is "
                  "malformed (unknown key, wrong type, bad training entry)."),
    "BE017": Code("unknown training", "No `[tool.buildenv.trainings.<name>]` table exists for "
                  "that name."),
    "BE018": Code("unsupported uri", "The dataset uri scheme is not supported. Use a path "
                  "relative to the repository root, file://, s3:// or gs://."),
    "BE019": Code("privacy loosened", "An environment may tighten the privacy of the one it "
                  "extends (restrict more datasets, a larger `min_group_size`, a smaller "
                  "budget), never loosen it: a child that un-restricts a parent's dataset would "
                  "show rows the parent's policy hides. Restore the parent's setting."),
    "BE020": Code("invalid evaluation", "`evaluation:` must name columns of the label dataset "
                  "(`key`), an existing dataset holding the label column (`dataset`), and join "
                  "keys declared in both datasets and unique in the joined one (`join`); "
                  "`dataset` and `holdout`/`key` exclude each other."),
    # --- hostile environment files ---------------------------------------------
    "BE026": Code("optional dependency not installed", "The command needs a part of buildenv "
                  "that is an optional extra: `mlflow` (MLflow's client and its sqlite store: "
                  "registering, promotion, history, rollback, retrain) or `models` (scikit-learn "
                  "and pandas in buildenv's own process: scoring models for promotion, trainings "
                  "in interpreter mode). Install it with the `pip install 'buildenv[...]'` line "
                  "the hint gives."),
    "BE030": Code("environment file too large", "The file is larger than the limit "
                  "(BUILDENV_MAX_ENV_BYTES, default 256 KiB) and was refused before it was read. "
                  "Environment files are a few kilobytes; a file this size is generated or "
                  "hostile. Raise the limit only for a file you trust."),
    "BE031": Code("too many YAML values", "The document expands to more values than the limit "
                  "(BUILDENV_MAX_ENV_VALUES, default 100,000). Anchors and aliases (`&a`, `*a`) "
                  "count once per use, so a few lines of aliases of aliases (an alias bomb) "
                  "can expand to billions; the parser stops at the limit instead of hanging."),
    "BE032": Code("YAML nesting too deep", "Mappings and lists nest more than 64 levels deep. "
                  "The environment format nests a few levels; deeper documents are refused "
                  "before they exhaust the parser's stack."),
    "BE033": Code("unsupported YAML value", "The document holds a tag (`!!python/...`, "
                  "`!!set`, a custom `!tag`) or a value the safe YAML constructor cannot build "
                  "(e.g. an integer with thousands of digits). Environment files hold plain "
                  "mappings, lists, strings, numbers, booleans and null."),
    "BE034": Code("min_count on an optional column", "`min_count: N` asks the data for at "
                  "least N non-null values, which an absent column cannot have; `required: "
                  "false` says the column may be absent. Keep one of them: drop `required: "
                  "false` (TFDV's `presence.min_count` makes a feature required too) or "
                  "`min_count`."),
    "BE035": Code("bad pattern", "`pattern` applies to string columns and must compile as RE2, "
                  "the regular-expression engine validation runs (pyarrow's): no look-around, "
                  "no backreferences. The message quotes the compiler's reason. The pattern is "
                  "searched anywhere in a value; anchor it with `^...$` for a whole-value match."),
    "BE036": Code("bad length", "`length: [min, max]` bounds the length of string values in "
                  "characters: string columns only, non-negative integers, min <= max, and "
                  "`null` for at most one open end."),
    "BE037": Code("tolerance without a constraint", "`max_violation_fraction` is the share of "
                  "non-null values allowed to violate the column's range, domain, pattern, "
                  "length or unique constraints; the column declares none of them, so it "
                  "would tolerate nothing. Add the constraint, or remove the key (for nulls, "
                  "use `max_null_fraction`)."),
    "BE038": Code("unique bool column", "`unique: true` marks a key column, and a bool column "
                  "has only two values, so any third row would violate it. Declare a domain "
                  "instead, or make the key another column."),
    "BE039": Code("allow_nan on a non-float column", "`allow_nan: false` refuses NaN values, "
                  "which only float32 and float64 columns can hold. Remove the key, or declare "
                  "the column as a float."),
    # --- the project, and `buildenv init` -----------------------------------------
    "BE040": Code("not a buildenv project", "The command needs a project, and neither the "
                  "working directory nor a parent holds a pyproject.toml with a "
                  "`[tool.buildenv]` table or an `environments/` directory (or `--root` / "
                  "BUILDENV_ROOT names a directory that does not). Nothing was done, so a CI job "
                  "run from the wrong directory fails instead of reporting on nothing. Run it "
                  "in the project, pass `--root`, or make one with `buildenv init`."),
    "BE041": Code("init would overwrite", "`buildenv init` writes new files only: the "
                  "environment file it would write already exists (or appeared while it "
                  "worked). Choose another `--env` name, or move the file away first."),
    "BE042": Code("no data to infer from", "A `--data` file of `buildenv init` is empty (0 bytes, "
                  "or a CSV without a header): there is nothing to infer, and nothing was "
                  "written. As a warning: the file has a header (or a Parquet schema) but no "
                  "rows, so only column names and types were inferred."),
    "BE043": Code("not a readable table", "A `--data` file of `buildenv init` is neither CSV "
                  "text (UTF-8, comma-separated, a header row with distinct names) nor Parquet, "
                  "or a `.parquet` file lacks Parquet's signature. Nothing was written."),
    "BE044": Code("mixed values in a column", "A CSV column holds values of several kinds (e.g. "
                  "integers and a few words): `buildenv init` declared the narrowest dtype that "
                  "holds them all (`string` when any value is text) and counts each kind, with "
                  "its first data row. Often the odd values are nulls written as text (`N/A`): "
                  "fix the data, or keep the wider dtype."),
    "BE045": Code("column left out", "A column's stored type has no environment dtype (a "
                  "decimal, a list, a struct, an unsigned 64-bit integer), or the files of a "
                  "partitioned dataset store it with types no one dtype reads. `buildenv init` "
                  "leaves it out of the environment; convert it, or declare it by hand."),
    "BE046": Code("dataset name needed", "`buildenv init --data PATH` names the dataset after "
                  "the file (or its directory), and that name is not usable (it starts with a "
                  "digit, holds spaces) or is already taken. Name it: `--data NAME=PATH`."),
    # --- locks ---------------------------------------------------------------
    "BE050": Code("lock missing", "The environment has no lock file, so its data is not pinned. "
                  "Run the `buildenv lock ENV` command named in the hint and commit the lock."),
    "BE051": Code("dataset changed", "A dataset's bytes no longer match the digest in the lock: "
                  "the data changed after it was pinned. If the change is intended, re-lock "
                  "(and review `buildenv drift`); otherwise restore the pinned version."),
    "BE052": Code("lock stale", "The environment file changed since the lock was written (a "
                  "dataset was added, removed or its uri changed). Run `buildenv lock ENV`."),
    "BE053": Code("dataset unreadable", "The dataset could not be opened or parsed: the file is "
                  "missing, not readable, or not in the declared format."),
    "BE054": Code("invalid lock file", "The lock file is not valid JSON of the lock format. Do "
                  "not edit locks by hand: delete it and run `buildenv lock ENV`."),
    "BE055": Code("read does not match the lock", "The bytes read through the data gate hash "
                  "to another digest than the lock pins: the data changed after the lock was "
                  "checked (a writer, a race, a replaced object). Nothing read is used and "
                  "nothing is built on it. If the new bytes are intended, review them "
                  "(`buildenv drift`) and relock."),
    "BE056": Code("data written during a read", "The file's size, mtime or ctime changed while "
                  "the data gate read it: a writer was at work. Nothing read is used; retry "
                  "when the writer has finished."),
    "BE057": Code("label lock stale", "A label set is not pinned in the lock as the environment "
                  "declares it now: it is new, its uri or mapping files changed, or its "
                  "declaration (dataset, key, field, taxonomy, UI version, reuse, exposure) "
                  "changed. Run `buildenv lock ENV`; builds refuse stale label locks."),
    "BE058": Code("label file changed", "A label export or mapping file no longer matches the "
                  "digest in the lock: the annotations changed after they were pinned. If the "
                  "change is intended, review `buildenv labels ENV` and re-lock; otherwise "
                  "restore the pinned file."),
    "BE059": Code("label read does not match the lock", "The bytes of a label export or "
                  "mapping read through the data gate hash to another digest than the lock "
                  "pins: the file changed after the lock was checked. Nothing parsed from it is "
                  "used and nothing is built on it."),
    # --- partitioned datasets -------------------------------------------------
    "BE060": Code("invalid partitioned dataset", "A dataset whose `uri` ends in `/` is a "
                  "directory (or bucket prefix) of Parquet files: its `format` is parquet, its "
                  "`partitions` are declared columns listed once, a uri naming one file takes "
                  "no `partitions`, and a restricted dataset declares none (partition values "
                  "are file paths, which the lock records and diagnostics name)."),
    "BE061": Code("not a Parquet file", "A file under a partitioned dataset's uri is not a "
                  "Parquet file (by its name: .parquet, .parq or .pq). It is neither pinned nor "
                  "silently left out: remove it or move it elsewhere. Files whose path has a "
                  "part starting with `.` or `_` (`_SUCCESS`, `.crc`) are not data and are "
                  "skipped."),
    "BE062": Code("path does not match the partitions", "With `partitions: [a, b]` every "
                  "file of the dataset lives at `a=<value>/b=<value>/<file>`. The message names "
                  "the file and what differs; move the file or fix `partitions`."),
    "BE063": Code("invalid partition value", "A partition value taken from a file's path does "
                  "not convert to its column's dtype, is null (`__HIVE_DEFAULT_PARTITION__`) "
                  "in a column declared `nullable: false`, or lies outside the column's domain "
                  "or range. The message names the files."),
    "BE064": Code("pinned file missing", "A file of the lock's manifest no longer exists "
                  "when the data gate reads it (it was removed after the lock). Nothing read "
                  "from the dataset is used: restore the file, or review the data and relock."),
    "BE065": Code("empty partitioned dataset", "The directory or prefix a partitioned dataset "
                  "names holds no Parquet file."),
    "BE066": Code("uri names a directory", "A dataset uri without a trailing `/` names a "
                  "directory. Write the uri with a trailing `/` to read it as a partitioned "
                  "dataset (a directory of Parquet files)."),
    "BE067": Code("partition directories disagree", "Without `partitions:`, a declared column "
                  "that names `name=<value>` directories in the file paths is a partition "
                  "column. Every file must then live under those directories, in one order, "
                  "with no other directory level. The message names the paths that disagree "
                  "and what to write: move the files, declare the column a level names, or "
                  "state the order with `partitions:`."),
    "BE068": Code("stored value differs from the path", "A file of a partitioned dataset "
                  "stores a partition column too, and some of its rows hold another value than "
                  "the file's `name=<value>` directory. The path's value is the one read (as "
                  "pyarrow and Spark read it), so the stored one would be silently replaced. "
                  "The message names the files and both values: move each file to the "
                  "directory of its rows, drop the column from the files, or, if the stored "
                  "column is right, write `partitions: []`."),
    "BE069": Code("one partition value spelled two ways", "Two `name=<value>` directories of "
                  "a partitioned dataset convert to the same value of their column "
                  "(`year=2026` and `year=02026`, `flag=true` and `flag=True`): they would read "
                  "as one partition while living in two directories, so a filter, a relock or "
                  "a rewrite of one misses the other. The message names both directories and "
                  "a file of each; move the files under one spelling. Leading zeros used "
                  "throughout (`month=09`) are fine."),
    # --- table datasets (Delta Lake, Iceberg) ---------------------------------------
    "BE070": Code("invalid table dataset", "A key does not go with the dataset's format: "
                  "`version`/`as_of` pin a `format: delta` table, `catalog`/`ref`/`snapshot` a "
                  "`format: iceberg` one; an Iceberg table needs its `catalog` and a "
                  "`namespace.table` identifier as `uri`; a table has no `partitions` (its "
                  "own spec partitions it) and no `dvc` pin; two pins of one table (`version` "
                  "and `as_of`, `ref` and `snapshot`) are one too many."),
    "BE071": Code("tables extra not installed", "Locking (or checking the latest version of) a "
                  "Delta or Iceberg table, and reading a `.dvc` pin, need the `tables` extra: "
                  "`pip install 'buildenv[tables]'` (deltalake, PyIceberg, dvc-data). A build "
                  "that reads a table version pinned by its lock does not."),
    "BE072": Code("table version not found", "The version, time or snapshot the environment "
                  "pins does not exist in the table (any more): beyond the latest version, "
                  "before the first commit, removed from the Delta log by log cleanup, or an "
                  "Iceberg snapshot that was expired. Pin one that exists; tag Iceberg "
                  "snapshots you pin (a tag is never expired) or set `keep: true` so that "
                  "buildenv keeps the pinned files."),
    "BE073": Code("table unreachable", "The table's storage or its catalog did not answer in "
                  "time (`catalog.timeout`, 30 s by default), refused the connection or the "
                  "credentials. The message names the catalog or uri; nothing was locked or "
                  "read."),
    "BE074": Code("unknown ref", "`ref` names no branch or tag of the Iceberg table. The "
                  "message lists the refs that exist."),
    "BE075": Code("table cannot be read file by file", "buildenv pins and verifies a table "
                  "version file by file, as plain Parquet. A version whose rows are not the "
                  "rows of its files is refused: Delta deletion vectors or column mapping, "
                  "Iceberg delete files, an Iceberg data file that stores a renamed column under "
                  "its old name, a file that is not Parquet, or partition values of a "
                  "restricted table (they would be written in the lock). Rewrite the table "
                  "(Delta: OPTIMIZE/REORG PURGE; Iceberg: rewrite data files) or pin a version "
                  "without them."),
    "BE076": Code("table version lacks a declared column", "The pinned table version has no "
                  "column the environment declares: the table's schema changed (a column "
                  "dropped or renamed) under the environment's columns. The message names the "
                  "table, the version and the column."),
    "BE077": Code("table file missing", "A data file that the pinned table version lists "
                  "(in its log or its manifests) no longer exists: a Delta VACUUM or an "
                  "Iceberg orphan-file cleanup removed it. A table dataset with `keep: true` "
                  "is read from the object store instead; otherwise pin a version whose files "
                  "exist."),
    # --- the object store and DVC pins -------------------------------------------------
    "BE080": Code("pinned bytes not in the store", "The bytes a lock pins are neither at the "
                  "dataset's uri nor in the object store (`.buildenv/objects/`, nor the shared "
                  "store `[tool.buildenv] store` when one is set). Run `buildenv pull` where "
                  "they were locked and pushed, or relock the data as it is now."),
    "BE081": Code("store unreachable", "The shared object store (`[tool.buildenv] store`) could "
                  "not be listed, read or written: the message names the prefix and the "
                  "error. Nothing was transferred partially: objects appear only complete."),
    "BE082": Code("store object damaged", "An object in the store does not hash to its name: "
                  "it was altered or truncated. It is not used (a local one is removed so the "
                  "next `buildenv pull` fetches it again)."),
    "BE083": Code("cannot check out", "`buildenv checkout` restores pinned bytes to local "
                  "paths only; the message names the dataset and why (a remote uri, a table, "
                  "bytes missing from the store)."),
    "BE085": Code("invalid .dvc file", "A dataset's `dvc:` file is missing, is not YAML, or "
                  "does not pin exactly one output with an `md5`. DVC writes it with `dvc add`."),
    "BE086": Code("DVC object unavailable", "The bytes a `.dvc` file pins are not in the DVC "
                  "cache and could not be fetched from the DVC remote, or they do not hash to "
                  "their md5. The message names the remote and the object; run `dvc push` "
                  "where the data was added."),
    "BE090": Code("invalid derived dataset", "A dataset with `source: {transform, inputs}` is computed by buildenv: it "
                  "takes no `uri`; its inputs are datasets of the environment, it is not "
                  "derived from itself (directly or through other derived datasets); an "
                  "aggregation's `count` is a declared integer column and its "
                  "`min_group_size` is not below `privacy.min_group_size`; its output is "
                  "partitioned like its first input, so it declares that input's partition "
                  "columns; each glob of its `files` matches a file of the repository. "
                  "docs/derived.md."),
    "BE091": Code("transform not found", "The module of a derived dataset's `transform` "
                  "(`path/to/module.py:function`, relative to the repository root) does not "
                  "exist or defines no top-level function of that name."),
    "BE092": Code("derived dataset's code changed", "The transform's code (its function, the module, or a repository module "
                  "it imports) changed since the lock pinned the derived dataset; the "
                  "message names what changed. Run `buildenv lock ENV`: every output file "
                  "is rebuilt."),
    "BE093": Code("derived dataset's input changed", "An input dataset of a derived dataset changed since the lock pinned it; "
                  "the message names the input and, for a partitioned input, the files "
                  "added, removed or changed. Run `buildenv lock ENV`: only the output "
                  "files of changed input files are rebuilt."),
    "BE094": Code("made by code, not built here", "A derived dataset or a label set computed by labeling functions is "
                  "pinned by the lock but not built in this checkout (a fresh clone, CI), "
                  "or the command does not run code. Build and lock rebuild it from the "
                  "pinned inputs and code (cached outputs first); when it does not come out "
                  "as pinned, the code is not deterministic: remove clocks, unseeded "
                  "randomness and unstable orders, then relock."),
    "BE095": Code("aggregate rows withheld", "A transform declared as an aggregation returned rows that summarise "
                  "fewer input rows (its `count` column) than the minimum group size; they "
                  "are left out of the output and counted, never shown. Lower the "
                  "grouping's resolution if too much is withheld."),
    # --- static checks of training code -----------------------------------------
    "BE100": Code("syntax error in training", "The training module does not parse."),
    "BE101": Code("undeclared dataset", "`ctx.read` asks for a dataset the environment does not "
                  "declare. Training code sees only declared datasets."),
    "BE102": Code("undeclared column", "`ctx.read` asks for a column the dataset does not "
                  "declare in this environment."),
    "BE103": Code("entry function missing", "The training entry `path.py:function` names a "
                  "function that the module does not define at top level."),
    "BE104": Code("bad entry signature", "The entry function must take exactly one positional "
                  "parameter, the build context: `def train(ctx):`."),
    "BE105": Code("dynamic ctx.read", "`ctx.read` is called with a non-literal dataset or column "
                  "list, so it cannot be checked statically. It is still enforced at run time."),
    "BE106": Code("estimator not served", "The training imports an estimator class that the "
                  "environment's serving stack does not list in `serving.ops`. The verify stage "
                  "decides; this early warning saves a training run."),
    "BE107": Code("training module not found", "The entry's module file does not exist."),
    "BE108": Code("evaluation dataset read", "The training reads the dataset the environment "
                  "names as `evaluation.dataset`: those rows exist to score the model, so "
                  "training on them would grade the model on its own answers."),
    # --- data validation ---------------------------------------------------------
    "BE201": Code("wrong dtype", "The column is stored with an Arrow type that is neither the "
                  "declared dtype nor a widening of it (int32 data for int64 is fine)."),
    "BE202": Code("null in non-nullable column", "The column is declared `nullable: false` but "
                  "has nulls."),
    "BE203": Code("too many nulls", "The column's null fraction exceeds `max_null_fraction`."),
    "BE204": Code("value outside domain", "The column has values that its `domain` does not "
                  "list. Either the data is wrong or the domain needs the new value. The "
                  "message gives the count and the fraction of non-null values; with "
                  "`max_violation_fraction`, a fraction within it is a warning."),
    "BE205": Code("value out of range", "The column has values outside its inclusive `range` "
                  "(an end written `null` is open). The message gives the count and fraction of "
                  "non-null values below and above; within `max_violation_fraction` it is a "
                  "warning."),
    "BE206": Code("declared column missing", "The environment declares a column that the "
                  "dataset file does not have."),
    "BE207": Code("value does not match pattern", "String values in which the column's "
                  "`pattern` (RE2, searched anywhere in the value unless anchored with ^...$) "
                  "finds no match. The message gives the count and fraction of non-null values "
                  "and, for unrestricted datasets, a few of them; within "
                  "`max_violation_fraction` it is a warning."),
    "BE208": Code("value length out of bounds", "String values whose length in characters "
                  "(Unicode code points) is outside the column's `length: [min, max]`. The "
                  "message counts the shorter and longer ones; within `max_violation_fraction` "
                  "it is a warning."),
    "BE209": Code("duplicated key", "The column is declared `unique: true`, but some non-null "
                  "values occur more than once. The message says how many values are "
                  "duplicated and how many rows hold them (every such row counts, as Great "
                  "Expectations counts them); values are shown for unrestricted datasets only. "
                  "Joins on this key (evaluation splits, label sets) would multiply rows."),
    "BE210": Code("uniqueness not checked", "Counting duplicates of a large `unique` column "
                  "spills its values to a private temporary directory (removed afterwards), and "
                  "writing there failed, usually for lack of space. Free space or point TMPDIR "
                  "at a larger disk and validate again; this result is not cached."),
    "BE211": Code("training-only column in serving data", "Serving data (`--serving`) holds a "
                  "column the environment marks training-only (`serving: false`), or the "
                  "label column: production is not supposed to have it, so either requests "
                  "carry something they should not (a label leaking into features) or the "
                  "declaration is out of date. Drop the column from the requests, or declare "
                  "it served (`serving: true`) if production really has it."),
    "BE212": Code("served column missing", "Serving data (`--serving`) lacks a column the "
                  "environment declares served: a model taking it as input cannot get it in "
                  "production. Send it with the requests, or mark the column `required: false` "
                  "(it may be absent) or `serving: false` (training-only)."),
    "BE213": Code("undeclared column", "The data has a column that the dataset does not "
                  "declare (TFDV's SCHEMA_NEW_COLUMN), reported because the dataset sets "
                  "`undeclared_columns: error` (exit 1) or `warn`. Declare the column if it is "
                  "meant to be there, or remove it from the data. Only names are shown, never "
                  "values."),
    "BE214": Code("too few values", "The column has fewer non-null values than its "
                  "`min_count` (TFDV's `presence.min_count`); an absent or entirely null "
                  "column has none."),
    "BE215": Code("NaN value", "The float column is declared `allow_nan: false` (TFDV's "
                  "`float_domain.disallow_nan`) but holds NaN values. NaN is not a null: "
                  "write nulls for missing values, or fix the computation that produced NaN."),
    # --- training ------------------------------------------------------------------
    "BE301": Code("training raised", "The training function raised an exception; the location "
                  "is the innermost frame in your code."),
    "BE302": Code("training timed out", "The training exceeded its time limit (--timeout)."),
    "BE303": Code("forbidden read", "At run time the training asked `ctx.read` for a dataset or "
                  "column the environment does not declare."),
    "BE304": Code("no model returned", "`train(ctx)` must return a model buildenv can serve: a "
                  "fitted scikit-learn-API estimator or pipeline (XGBoost and LightGBM wrappers "
                  "included), a `buildenv.TorchModel(module, inputs=[...], output=...)`, or an "
                  "`onnx.ModelProto` whose graph inputs are column names. A bare PyTorch module "
                  "is refused: wrap it in `buildenv.TorchModel` to say what it reads and "
                  "returns."),
    "BE305": Code("training process died", "The training subprocess exited without a result "
                  "(killed, out of memory, or interpreter crash)."),
    "BE306": Code("ctx.set_holdout is deprecated", "The environment owns evaluation "
                  "(`evaluation:`): the build scores every model on rows the training never "
                  "sees, and promotion compares models on them. A sample handed over with "
                  "`ctx.set_holdout` is ignored; remove the call."),
    "BE320": Code("sandbox required but unavailable", "The training's sandbox policy is "
                  "`required` (set in pyproject.toml, or implied by an environment with "
                  "restricted datasets) and this machine offers neither bubblewrap namespaces "
                  "nor Landlock. Nothing ran. `buildenv doctor` says what is missing and why; "
                  "install bubblewrap, allow user namespaces, or build on a machine that "
                  "isolates (docs/sandbox.md)."),
    "BE321": Code("no sandbox on this machine", "A warning, once per process: the policy is "
                  "`preferred` and this machine offers no isolation, so trainings run as plain "
                  "processes that could read any file and reach the network. `buildenv "
                  "doctor` explains; `sandbox = \"required\"` turns this into an error."),
    "BE322": Code("path hidden by the sandbox", "The training (or a transform, or labeling "
                  "functions: the message names which) opened a dataset file, a label "
                  "export, a lock, buildenv's state directory, or a path outside what the "
                  "sandbox shows (the home directory, another process's files) directly. Data "
                  "reaches a training only through `ctx.read`, `ctx.scan` and `ctx.labels`, "
                  "verified and audited; other files it needs go under the training's "
                  "`sandbox.read_only`. A direct data access fails the build even when the "
                  "training catches the error. Also a transform that leaves something other "
                  "than the file the runner wrote in place of an output (a link, a special "
                  "file): the build never reads through it and stores nothing of that run."),
    "BE323": Code("write outside the output", "The training wrote into the repository, its "
                  "Python environment or a system directory. In the sandbox only the model's "
                  "output directory and a private temporary directory (TMPDIR, also HOME) are "
                  "writable, and both are thrown away but for the model."),
    "BE324": Code("network refused", "The training connected to an address, resolved a host "
                  "name or sent a packet, and the sandbox has no network (bubblewrap: only "
                  "its own loopback; Landlock: no IP sockets). A training that must download "
                  "something declares `network = \"allow\"` with a `reason` in its `sandbox` "
                  "table; never next to restricted data. Transforms and labeling functions "
                  "never reach the network."),
    "BE325": Code("invalid sandbox opt-in", "A training's `sandbox` table asks for something "
                  "that cannot hold: the network next to an environment's restricted datasets, "
                  "or a read-only path that does not exist."),
    "BE326": Code("sandbox set-up failed", "bubblewrap or Landlock refused to set up the "
                  "training's sandbox (the message quotes why), although this machine's check "
                  "passed. `buildenv doctor` re-checks; the build is not cached."),
    "BE327": Code("mounts cannot change", "The training ran mount, umount, unshare or a "
                  "similar program. The sandbox's filesystem view is fixed when it starts and "
                  "the training holds no capability to change it."),
    "BE328": Code("processes left running", "A warning: the training started processes that "
                  "left its session (to outlive it); they were stopped with it. Wait for what "
                  "a training starts."),
    "BE340": Code("transform raised", "A derived dataset's transform (or its module, when imported) raised an "
                  "exception. The location is the innermost frame in your code and the "
                  "message names the input file; on restricted data the exception message "
                  "is left out."),
    "BE341": Code("transform returned no data", "A transform returns or yields pandas DataFrames, Arrow tables or record "
                  "batches holding exactly the columns the derived dataset declares "
                  "(partition columns may be left out: they come from the path). The "
                  "message says what came back."),
    "BE342": Code("transform column has the wrong type", "A column the transform returned does not convert to the dtype the "
                  "derived dataset declares for it. Cast it in the transform or fix the "
                  "declaration."),
    "BE343": Code("transform read refused", "The transform asked `ctx.read`/`ctx.scan` for a dataset that is not one "
                  "of its `inputs`, or a column the input does not declare. A transform "
                  "reads its inputs only, through the data gate."),
    "BE344": Code("code-made source timed out", "Building a derived dataset or applying labeling functions ran longer "
                  "than its `source.timeout` (seconds). The process was stopped and nothing "
                  "it wrote is used; raise the timeout or make the code faster."),
    "BE345": Code("code-made source process died", "The process that runs transforms and labeling functions exited without a "
                  "result (killed, out of memory, or interpreter crash). Nothing it wrote "
                  "is used."),
    "BE346": Code("partition value differs from its path", "A transform of a partitioned input returned a partition column whose "
                  "values differ from the partition its input file belongs to. The output "
                  "is partitioned like the input: leave partition columns out, or return "
                  "the file's own value."),
    # --- toolchains: the training's own locked environment (docs/toolchains.md) -------------
    "BE350": Code("invalid training requirements", "A requirement of the training's "
                  "environment is not a pip requirement (`requirements` under "
                  "[tool.buildenv.trainings.<name>], or the environment's "
                  "`serving.requirements` it defaults to), or its `lock` file cannot be read. "
                  "Nothing was resolved."),
    "BE351": Code("requirements cannot be resolved", "uv found no set of versions satisfying "
                  "the training's requirements together with what buildenv's runner needs. "
                  "The message is the resolver's reasoning, condensed; the location is the "
                  "requirement it names. Loosen or change it; a training's own requirement of a "
                  "distribution replaces buildenv's pin of it."),
    "BE352": Code("package index unreachable", "The package index did not answer (timeout, "
                  "refused connection, DNS) while resolving or installing the training's "
                  "environment, or, offline, a package is not in uv's cache. The URL is named. "
                  "Check the network and `[tool.buildenv.toolchains] index_url`, raise "
                  "`timeout`, or with a warm cache set `offline = true`."),
    "BE353": Code("environment not installed", "uv could not install the locked packages into "
                  "the training's environment (a hash that does not match the file the index "
                  "serves, a wheel missing for this platform, a full disk). Nothing half-built "
                  "is left: the environment is renamed into place only when complete."),
    "BE354": Code("lock file not usable", "The training's `lock` file is not a hashed lock: a "
                  "line is not `name==version`, an entry has no `--hash`, or it lacks what "
                  "buildenv's runner imports. `buildenv toolchain TRAINING --env ENV "
                  "--write-lock FILE` writes a complete one."),
    "BE355": Code("uv not installed", "buildenv resolves trainings' environments with uv, "
                  "which is installed with it (the `uv` distribution). Reinstall buildenv, or "
                  "set `[tool.buildenv.toolchains] mode = \"interpreter\"` to run trainings in "
                  "buildenv's own interpreter."),
    "BE356": Code("model code cannot be shipped", "The fitted model refers to a class or "
                  "function that the artifact cannot carry: one defined in the training's entry "
                  "module (loading the model would run the training), one of buildenv's own "
                  "modules, or one from a module that is neither in the repository nor "
                  "installed in the training's environment. Classes of repository modules are "
                  "shipped with the model (MLflow's `code_paths`); move the class into such a "
                  "module."),
    # --- verification ----------------------------------------------------------------
    "BE401": Code("input not served", "The model uses a column that the environment marks "
                  "`serving: false` (training-only): production cannot provide it. Drop the "
                  "input, or build against an environment that serves it (the hint lists them)."),
    "BE402": Code("undeclared input", "The model uses a column that no dataset of the "
                  "environment declares, so serving cannot provide it."),
    "BE403": Code("label used as input", "The label column is one of the model's inputs: the "
                  "model would be given the answer."),
    "BE404": Code("operation not supported by serving", "The fitted model contains a class that "
                  "the environment's `serving.ops` allow-list does not match. The message says "
                  "where it sits in the pipeline and which environments support it."),
    "BE405": Code("ONNX conversion failed", "The model could not be converted to ONNX at the "
                  "environment's opset (skl2onnx for scikit-learn, onnxmltools for XGBoost and "
                  "LightGBM, torch.onnx.export for PyTorch). The message gives the converter's "
                  "reason: a step without a converter, or a forward() the exporter cannot trace."),
    "BE406": Code("ONNX op not supported", "The ONNX graph uses an operator that no "
                  "`domain:op_type` glob of `serving.ops` matches (the message names the "
                  "operator and its first node, subgraphs included), or needs a higher "
                  "default-domain opset than `serving.opset`. The hint lists the environments "
                  "that accept it; `buildenv ops DIR` prints the graph's inventory."),
    "BE407": Code("parity failed", "The served model (onnxruntime for the `onnx` stack, the "
                  "model loaded back from its file for `sklearn`) disagrees with the trained one "
                  "on the environment's evaluation rows: a predicted label differs where the "
                  "trained model's two best classes are not within the tolerance of each other "
                  "(a near-tie is allowed), or a probability or value differs by more than "
                  "`serving.parity` (`atol` + `rtol` x |value|). The lineage's `parity` holds the "
                  "histogram of differences and the worst rows."),
    "BE408": Code("library version not served", "The model was trained with a library version "
                  "outside `serving.requirements`: production would load it with another "
                  "version."),
    "BE409": Code("model inputs unknown", "buildenv cannot tell which columns the model reads "
                  "(no `feature_names_in_`). Fit on a pandas DataFrame with named columns."),
    "BE410": Code("no evaluation rows", "The environment declares no label, so it has no "
                  "evaluation rows: checks that need them (ONNX parity, importance) were "
                  "skipped."),
    "BE411": Code("model cannot be evaluated", "The build could not score the model on the "
                  "environment's evaluation rows: a model input is not among the served columns "
                  "of those rows (declare `evaluation.join` for columns of other datasets), or "
                  "the model failed on them."),
    "BE412": Code("ONNX IR version too new", "The ONNX graph's IR version is above "
                  "`serving.max_ir_version`, the highest the serving runtime loads. Convert with "
                  "an older exporter, or raise the limit where the runtime is newer."),
    "BE413": Code("family not served by the stack", "The model is a PyTorch module or an ONNX "
                  "graph, and the environment's serving stack is `sklearn`, which loads "
                  "scikit-learn-API models only. Build it for an environment with `stack: onnx` "
                  "(the hint lists them)."),
    "BE414": Code("over serving budget", "The artifact is larger than "
                  "`serving.limits.max_model_mb`, or single-row predictions in the serving "
                  "runtime take longer than `serving.limits.max_latency_ms` at p99 (measured at "
                  "compile on up to 1,000 evaluation rows). The message gives the measured "
                  "figure; make the model smaller, or raise the budget if production allows it."),
    "BE415": Code("invalid model contract", "The returned model does not hold to what it "
                  "declares: a TorchModel with an unknown `output` kind, classes the label does "
                  "not have, or a module whose forward fails on (or returns the wrong shape for) "
                  "a float32 tensor of the declared inputs; an ONNX model that fails onnx's "
                  "checker, that onnxruntime cannot load, or whose outputs are neither a label, "
                  "probabilities nor a value; or a saved model that cannot be loaded back as "
                  "serving loads it."),
    "BE416": Code("untrusted type in a skops file", "The model's skops file would hold a type "
                  "that neither skops nor the environment's `serving.ops` trust (a class of your "
                  "own, or an internal type of an allowed class buildenv does not know). "
                  "Serving loads skops files with the environment's trust, never the file's. "
                  "Add the class to `serving.ops` if production runs it, or opt in to "
                  "`serving.format: pickle`."),
    "BE417": Code("skops cannot save the model", "skops cannot represent an object of the "
                  "model. Set `serving.format: pickle` to save it with cloudpickle (an explicit "
                  "opt-in: loading a pickle can run code; the artifact digest is still checked "
                  "before every load)."),
    "BE418": Code("framework model inside a wrapper", "An estimator of the model holds a "
                  "PyTorch (or Keras/TensorFlow) object in an attribute: only the wrapper class "
                  "would be verified, the layers inside never, and the artifact could not be "
                  "loaded without the repository's code. Return "
                  "`buildenv.TorchModel(module, inputs=[...], output=...)` for a PyTorch "
                  "module: it is converted to ONNX and its operators are checked."),
    # --- evaluation: slices, label coverage, model cards --------------------------------
    "BE501": Code("unknown slice column", "A slice (`evaluation.slices`: `by`, or a column of "
                  "`where`) names a column the evaluation rows do not carry. Slices may use any "
                  "declared column of the rows' dataset or of a dataset joined to it "
                  "(`evaluation.join`, or the datasets sharing a column name with it), served or "
                  "not. The hint names the dataset that declares it, or the closest name."),
    "BE502": Code("bad slice bins", "`bins` are the edges of numeric bins: at least two, "
                  "strictly increasing (no edge twice), on a numeric `by` column. "
                  "`[0, 500, 1500]` makes [0, 500) and [500, 1500]; `.inf` leaves an end open."),
    "BE503": Code("bad slice", "A slice takes `by` (a column, optionally `bins`) or `where` (a "
                  "predicate in the `ctx.read` filter syntax) with a `name`; a float column "
                  "needs `bins`; a slice is declared once; `promotion.slices` needs slices. "
                  "Under `privacy.release: dp`, a slice of restricted rows needs public keys: "
                  "a declared `domain`, a bool column, or `bins`."),
    "BE504": Code("empty slice", "A declared bin or `where` slice holds none of the "
                  "evaluation rows, which usually means a typo in the edges or the predicate "
                  "(units, a value outside the data). Fix the declaration; on restricted rows "
                  "an empty slice is withheld like any small one instead."),
    "BE506": Code("bad coverage rule", "`label.coverage` counts rows per class: the label needs "
                  "classes (`label.classes`, a bool column, or a label set's taxonomy), a rule "
                  "under `classes` must name one of them, and `per_slice` needs "
                  "`evaluation.slices`."),
    "BE507": Code("class below coverage", "A class has fewer rows (`min_count`) or a smaller "
                  "share (`min_fraction`) than `label.coverage` asks, in the training rows, the "
                  "evaluation rows, or an evaluation slice (`per_slice`). Label more examples of "
                  "it, hold out more rows, or lower the rule; `severity: warning` reports "
                  "without failing. Counts of restricted rows are withheld below "
                  "`min_group_size` (always under `privacy.release: dp`)."),
    "BE508": Code("class share moved", "Between the locked data and new data a class's share "
                  "of the rows moved by more than `label.coverage.max_share_change`. The message "
                  "names the class, both shares and the most frequent class before and after. If "
                  "the new distribution is expected, relock; otherwise find out why the labels "
                  "changed before training on them."),
    "BE510": Code("gate failed: slice regression", "On an evaluation slice the candidate is worse "
                  "than the champion by more than `promotion.slices.max_regression`, with the "
                  "declared confidence (paired bootstrap on the same rows, Holm-corrected "
                  "across slices; docs/evaluation.md). The message names the slice, both values "
                  "and the interval of the difference. The champion stays."),
    "BE511": Code("gate failed: slice gap", "The candidate's gate metric differs between its "
                  "best and worst slice (slices with at least `min_rows` rows) by more than "
                  "`promotion.slices.max_gap`. The champion stays."),
    "BE512": Code("champion scored on slices now", "The champion was built before the "
                  "environment declared slices, so its lineage has no slice figures; promotion "
                  "scored it on every slice now, on the same rows as the candidate. A note: "
                  "nothing to do."),
    "BE515": Code("no model card", "`buildenv card` prints the card of dist/<training>/<env>/ "
                  "(every build writes one) or, with `--champion`, of the registered champion; "
                  "there is none. Build (and promote) first."),
    "BE516": Code("slice figures not released", "The evaluation rows are restricted and "
                  "`privacy.release` is dp, but the budget left cannot pay "
                  "`privacy.release_epsilon` (or OpenDP is not installed): the artifact's slice "
                  "figures are withheld. Gates still decide on exact figures; raise the budget, "
                  "lower release_epsilon, or install `buildenv[privacy]`."),
    # --- drift ---------------------------------------------------------------------------
    "BE601": Code("categorical drift", "The value frequencies of a categorical (string or bool) "
                  "column moved more than a threshold: `linf`, the largest change of any value's "
                  "frequency (L-infinity distance, as in TFDV), `jsd` (Jensen-Shannon divergence, "
                  "log base 2) or `psi`. The message names the value that moved most; the hints "
                  "give the command that accepts the new data and the exact threshold change."),
    "BE602": Code("numeric drift", "A numeric, date or timestamp column's distribution moved "
                  "more than its `psi`, `jsd` or `linf` threshold over shared bins (the locked "
                  "version's deciles). The message gives the shift in the column's own units: "
                  "mean, spread, median and the bin that moved most."),
    "BE603": Code("new categorical values", "The candidate data has values outside the column's "
                  "declared domain, with their row counts (for restricted datasets, values seen "
                  "fewer than `privacy.min_group_size` times are counted, never shown)."),
    "BE604": Code("null fraction changed", "A column's null fraction moved more than the "
                  "`null_fraction` threshold."),
    "BE611": Code("categorical skew", "A categorical (string or bool) column's value "
                  "frequencies in serving data differ from the locked training data by more "
                  "than a `monitoring.skew` threshold (`linf`, `jsd`, `psi`; TFDV's "
                  "`skew_comparator`). The message names the value whose share differs most; "
                  "the hints say where the threshold is written and how to change it."),
    "BE612": Code("numeric skew", "A numeric, date or timestamp column's distribution in "
                  "serving data differs from the locked training data by more than a "
                  "`monitoring.skew` threshold, over shared bins (the training data's "
                  "deciles). The message gives the difference in the column's own units."),
    "BE613": Code("serving values outside the domain", "Serving data holds values outside the "
                  "column's declared domain, with their row counts (for restricted datasets, "
                  "values seen fewer than `privacy.min_group_size` times are counted, never "
                  "shown): production sends the model values it was never trained on."),
    "BE614": Code("null fraction skew", "A column's null fraction in serving data differs from "
                  "the training data's by more than the `null_fraction` skew threshold: "
                  "production is missing values that training had (or the reverse)."),
    "BE615": Code("feature value skew", "With `buildenv skew --key`, serving rows are joined "
                  "to training rows with the same key, and more than the `mismatch` share of "
                  "the joined examples has a different value for the column at serving than "
                  "in training: the feature is computed differently in production."),
    "BE616": Code("no serving row joined", "`buildenv skew --key` found no serving row whose "
                  "key occurs in the training data, so feature-value skew was not measured. "
                  "Check that the key names the same entity on both sides."),
    # --- promotion -----------------------------------------------------------------------
    "BE701": Code("gate failed: metric below minimum", "The candidate's gate metric is below "
                  "`promotion.min_value`."),
    "BE702": Code("gate failed: regression", "The candidate is worse than the current champion "
                  "by more than `promotion.max_regression` on the same held-out data."),
    "BE703": Code("no candidate", "No registered model version exists for that training and "
                  "environment: build it first."),
    "BE704": Code("registry error", "The MLflow tracking/registry server could not be reached or "
                  "refused the request."),
    "BE705": Code("no promotion gates", "The environment has no `promotion:` section, so there is "
                  "nothing to gate a candidate on. Add one (metric, min_value, max_regression)."),
    "BE706": Code("no previous champion", "`rollback` found no earlier champion in the alias "
                  "history (`buildenv history`): the alias was set once, or never."),
    "BE707": Code("gate failed: required check", "A check listed in "
                  "`promotion.required_checks` has not passed for the candidate. `validate` and "
                  "`verify` pass with every build; `drift` is recorded on the model version by "
                  "`buildenv retrain`."),
    "BE708": Code("compared logged metrics", "Candidate and champion could not both be scored on "
                  "the candidate's held-out sample (a metric buildenv cannot recompute, a holdout "
                  "built on another machine, or a champion that reads other columns), so the "
                  "values each training logged are compared; they may come from different rows."),
    "BE709": Code("gate metric unavailable", "The promotion metric can be neither recomputed on "
                  "the held-out sample nor read from the training's logged metrics. Log it with "
                  "`ctx.log_metric`, or gate on val_auc, val_logloss or accuracy."),
    "BE710": Code("cannot rewrite dataset uri", "`buildenv retrain ENV --dataset NAME --uri NEW` "
                  "edits the line of ENV's own file where the dataset's uri is written. A uri "
                  "inherited through `extends` is not rewritten (that would change every sibling "
                  "of the parent): override the dataset's uri in ENV's file first."),
    "BE711": Code("retrain already running", "Another `buildenv retrain` holds the repository's "
                  "retrain lock (.buildenv/retrain/.lock). Retrains of one repository run one at "
                  "a time; wait for it to finish."),
    "BE713": Code("champion cannot be scored", "The current champion cannot be scored on this "
                  "environment's evaluation rows (it reads a column this environment does not "
                  "serve): it could not serve here either, so the regression gate is skipped."),
    # --- serving images ---------------------------------------------------------------------
    "BE750": Code("no artifact to package", "`buildenv image` packages dist/<training>/<env>/; "
                  "build it first."),
    "BE751": Code("serving requirement not vendorable", "The image vendors the artifact's "
                  "serving environment: serving.requirements and what the model's format needs "
                  "(numpy and onnxruntime for ONNX, pandas and skops for skops files, pandas and "
                  "cloudpickle for pickles), locked with the versions the model was trained "
                  "with. That set cannot be resolved or installed (the message is the "
                  "resolver's), or, in interpreter mode, a package is missing from the Python "
                  "environment running buildenv, its version does not satisfy the requirement, "
                  "or it has no RECORD file list."),
    "BE752": Code("not servable by the image", "`buildenv image` serves a model on the "
                  "environment's serving stack (scikit-learn models for `sklearn`, an ONNX graph "
                  "with onnxruntime for `onnx`) whose inputs are served columns of the "
                  "environment; the environment declares no serving stack, the artifact was "
                  "built for the other stack, or its inputs are unknown or not served."),
    "BE753": Code("no Docker daemon", "`--docker` was asked for, but no daemon answered at "
                  "DOCKER_HOST (or the default socket). `--oci FILE` builds an image archive "
                  "without a daemon."),
    "BE754": Code("docker build failed", "The daemon refused or failed the build; the hints show "
                  "the last lines of its log (often: the base image is not present locally and "
                  "no registry is reachable; pass --base-image)."),
    "BE755": Code("unusable base rootfs", "`--base-rootfs` must be a readable tarball of a root "
                  "filesystem holding python<X.Y> for the Python version the packages are "
                  "vendored from."),
    "BE756": Code("GPU libraries in a CPU image", "The serving environment's lock holds CUDA "
                  "runtime distributions (nvidia-*, cuda-*, triton), which a CPU serving image "
                  "must not carry: PyPI's torch wheels and the `xgboost` package bring them. "
                  "Use the CPU builds (`xgboost-cpu`; torch from a CPU wheel index or "
                  "wheelhouse, set in [tool.buildenv.toolchains])."),
    "BE757": Code("image larger than allowed", "The image is bigger than the environment's "
                  "`serving.limits.max_image_mb`. Checked before anything is written where "
                  "the base's size is known (the --base-rootfs tarball, the daemon's base "
                  "image), and on the image's own layer alone otherwise."),
    # --- integrity, signing, concurrency ------------------------------------------------
    "BE760": Code("lock wait timed out", "Another buildenv process held a lock this command "
                  "needs (a build of the same pair, registration in the same MLflow store, a "
                  "champion alias move) for longer than the wait limit. The message names its "
                  "pid. Locks are released when their holder exits, even when it is killed; "
                  "BUILDENV_LOCK_TIMEOUT sets the wait in seconds."),
    "BE761": Code("artifact does not match its record", "The files of a model artifact hash "
                  "to another digest than the one recorded for it (the registry's "
                  "buildenv.artifact_digest tag, or the lineage's model_digest). It was "
                  "modified after it was built, so buildenv refuses to load it: the model file "
                  "is never deserialised, since unpickling a modified file can run arbitrary "
                  "code. Rebuild it, or find out who changed it."),
    "BE762": Code("no integrity record", "A model version or artifact directory has no "
                  "recorded digest (no buildenv.artifact_digest tag, no lineage), so its bytes "
                  "cannot be checked before loading; buildenv does not load unverified models. "
                  "Register it with `buildenv build` or `buildenv register`."),
    "BE763": Code("signature does not verify", "A verification key is configured "
                  "(BUILDENV_VERIFY_KEY or [tool.buildenv] verify_key), and the artifact's "
                  "signature (buildenv.sig) does not verify with it: the files changed after "
                  "signing, or another key signed them."),
    "BE764": Code("artifact not signed", "A verification key is configured, but the artifact "
                  "has no buildenv.sig. Build it with a signing key configured "
                  "(BUILDENV_SIGNING_KEY or [tool.buildenv] signing_key)."),
    "BE765": Code("signing support not installed", "Signing and verifying artifacts uses the "
                  "`signing` extra (model-signing, pyopenssl). Install it "
                  "(`pip install 'buildenv[signing]'`) or unset the signing and verification "
                  "keys."),
    "BE766": Code("unusable signing key", "The configured signing or verification key cannot "
                  "be read or is not an elliptic-curve key in PEM format (P-256, P-384 or "
                  "P-521). `openssl ecparam -name prime256v1 -genkey -noout -out key.pem` makes "
                  "one; `openssl ec -in key.pem -pubout -out key.pub` its public half."),
    "BE767": Code("output directory holds other files", "`--out DIR` would replace DIR, but DIR "
                  "holds files buildenv did not write (it is neither empty nor an unmodified "
                  "buildenv artifact). buildenv never deletes them: choose an empty or new "
                  "directory, or remove DIR yourself."),
    "BE768": Code("champion changed meanwhile", "Another promotion or rollback moved the "
                  "champion alias after this command compared against it. Moves are "
                  "compare-and-set: nothing was changed. Run the command again to compare with "
                  "the new champion."),
    "BE769": Code("image is not the champion", "`buildenv image` packages "
                  "dist/<training>/<env>/, and that artifact is not the version the "
                  "<env>-champion alias points to (after a rollback, or a build not yet "
                  "promoted). `--champion` packages the champion from the registry instead."),
    "BE770": Code("registered again", "buildenv remembered registering this artifact, but the "
                  "MLflow store no longer holds that version (the store was reset or lost), so "
                  "the artifact was registered again under a new version number."),
    "BE771": Code("not an artifact of that pair", "`buildenv register DIR --training T --env E` "
                  "registers a built artifact: DIR must hold buildenv.json lineage naming "
                  "training T and environment E."),
    "BE772": Code("no champion to package", "`buildenv image --champion` packages the version "
                  "the <env>-champion alias points to, and the alias is not set. Promote a "
                  "version first, or leave out --champion to package dist/."),
    "BE773": Code("model file refused at load", "The artifact's digest matched, but its model "
                  "file cannot be loaded as the environment allows: a skops file holding a type "
                  "the environment's `serving.ops` do not trust (trust comes from the "
                  "environment, never from the file), a pickle where the environment does not "
                  "opt in to `serving.format: pickle`, or an ONNX file onnxruntime refuses."),
    # --- audit ---------------------------------------------------------------------------
    "BE801": Code("audit log not sound", "The audit log of restricted reads was edited, "
                  "truncated or reordered, or cannot be written. Reads of restricted datasets "
                  "stop until it is sound: `buildenv audit --verify` names the first bad "
                  "record; restore the log from a backup."),
    # --- learning about restricted data: private statistics, synthetic data, peek --------
    "BE810": Code("privacy extra not installed", "`buildenv stats` of a restricted dataset and "
                  "`buildenv synth` release figures with differential privacy through OpenDP "
                  "(with its Polars and mbi extras), an optional dependency. Install it with "
                  "`pip install 'buildenv[privacy]'`."),
    "BE811": Code("privacy budget exceeded", "The request would spend more privacy loss "
                  "(epsilon) than is left of the dataset's `privacy.epsilon_budget`. The message "
                  "shows what is spent and what is left; nothing was released and nothing was "
                  "spent. Ask for less (--epsilon), or accept that the data has told all it "
                  "may: raising the budget weakens the guarantee for every person in it."),
    "BE812": Code("no privacy budget declared", "The environment declares no "
                  "`privacy.epsilon_budget` for this restricted dataset, so no private figure "
                  "may be released. Declare one (one number for every restricted dataset, or a "
                  "mapping per dataset); see docs/privacy.md."),
    "BE813": Code("invalid epsilon", "--epsilon is the privacy loss a call may spend: a finite "
                  "number greater than 0 (smaller is more private and noisier)."),
    "BE814": Code("column cannot be described", "Statistics were asked for a number, date or "
                  "time column that declares no `range`: without public bounds no mean, "
                  "histogram or quantile can be released privately (or described without "
                  "looking). Declare the range users may know publicly."),
    "BE815": Code("invalid row count", "--rows (rows to synthesize, or rows to peek at) must be "
                  "at least 1."),
    "BE816": Code("peek without a reason", "`buildenv peek` shows real rows only with a reason, "
                  "which the audit log records with the access: pass --reason \"...\"."),
    "BE817": Code("actor may not peek", "The actor (BUILDENV_ACTOR, the CI's user, or the login "
                  "name) is not in the environment's `privacy.peek.actors`, so no real row is "
                  "shown. The refused attempt is in the audit log. Use `buildenv stats` or "
                  "`buildenv synth` to learn about the data without seeing it."),
    "BE818": Code("dataset not restricted", "`buildenv synth` makes stand-ins for data people "
                  "may not see; this dataset is not restricted in the environment, so use it "
                  "as it is."),
    "BE819": Code("privacy ledger damaged", "A line of .buildenv/privacy/ledger.jsonl (other "
                  "than a torn last one) is not a release record. Ignoring it could understate "
                  "what was spent, so private releases stop until the ledger is restored from a "
                  "backup; `buildenv audit` lists every release with its epsilon."),
    "BE820": Code("synthetic provenance names another file", "`privacy.synthetic.<D>.uri` must "
                  "be the uri dataset <D> reads in the same environment: the provenance "
                  "describes a file, and only that file may stand in for restricted data. "
                  "Regenerate with `buildenv synth`, which writes both."),
    "BE821": Code("synthetic file does not match provenance", "A dataset the environment "
                  "un-restricts as synthetic points at a file whose digest differs from the "
                  "recorded one, or whose Parquet footer lacks the provenance `buildenv synth` "
                  "embeds (e.g. a copy of real data). Lock and build refuse it; regenerate the "
                  "stand-in with `buildenv synth`."),
    "BE822": Code("join key has no public source", "A column that joins another dataset "
                  "(`evaluation.join`) is synthesized by drawing from that dataset's keys. The "
                  "other dataset is restricted and has no synthetic stand-in yet, and real keys "
                  "may not be copied: synthesize it first."),
    "BE823": Code("column cannot be synthesized", "A number, date or time column without a "
                  "`range` cannot be synthesized without looking at the data (strings and "
                  "integers without a domain become identifiers). Declare its range."),
    "BE824": Code("invalid --pair", "--pair names two different columns of the dataset that "
                  "have a domain or range, e.g. --pair age,plan."),
    "BE825": Code("derived environment written by hand", "`buildenv synth` writes "
                  "environments/<ENV>-synthetic.yaml and starts it with a marker line; a file "
                  "of that name without the marker was written by someone and is not "
                  "overwritten. Rename it, or use --out and write the environment yourself."),
    "BE826": Code("invalid --bins", "--bins is the number of bins a declared range is cut into, "
                  "from 1 to 1000."),
    "BE827": Code("too few columns to synthesize", "MST models the dataset through pairs of "
                  "columns with a domain or range; the dataset has fewer than two. Declare a "
                  "domain or range on more of its columns."),
    # --- label sets ----------------------------------------------------------------------
    "BE850": Code("invalid label set", "A label set declaration (or `label:`) is inconsistent: a "
                  "Label Studio export without `field`, a key column that is not an integer or "
                  "string, a taxonomy without classes or with a class twice, `reuse` of a set "
                  "that labels other examples, or `label` with both `labels` and "
                  "`dataset`/`column`. docs/labels.md describes the format."),
    "BE851": Code("unknown label set", "`label: {labels: NAME}` or a `reuse` entry names a "
                  "label set that the environment does not declare under `labels:`."),
    "BE852": Code("reuse cycle", "Following `reuse` from a label set leads back to it. A label "
                  "set reuses older sets only; remove one `reuse` entry of the cycle."),
    "BE853": Code("label file unreadable", "A label export or mapping file could not be "
                  "opened: it is missing or not readable."),
    "BE854": Code("not a Label Studio export", "The export is not Label Studio JSON: not a "
                  "JSON array of tasks, a task without `data` or without the key, an annotation "
                  "without `completed_by`, more than one choice for the field, or a bad "
                  "`created_at`. The message gives the export line."),
    "BE855": Code("invalid Parquet label file", "The Parquet form needs columns `key`, "
                  "`label` and `annotator` (plus optional `ui_version`, `taxonomy_version`, "
                  "`created_at`) with text or integer values; keys and annotators are never "
                  "null."),
    "BE856": Code("class outside the taxonomy", "Annotations choose classes the label set's "
                  "taxonomy does not list (or, in Parquet, were made under another taxonomy "
                  "version). The message counts them per class with the first export line. "
                  "Add the classes in a new taxonomy version, or fix the annotations."),
    "BE857": Code("invalid SSSOM mapping", "A mapping file is not SSSOM TSV as buildenv reads "
                  "it: a header with subject_id, predicate_id and object_id, tab-separated rows, "
                  "and predicates skos:exactMatch, skos:broadMatch, skos:narrowMatch or "
                  "skos:closeMatch. The message gives the TSV line."),
    "BE858": Code("mapping names an unknown class", "A mapping row's subject_id is not a class "
                  "of the reused label set's taxonomy, or its object_id is not a class of this "
                  "label set's taxonomy. The message gives the TSV line."),
    "BE859": Code("reuse needs a mapping", "A `reuse` entry without `mapping` carries classes "
                  "over by name, so every class of the reused taxonomy must exist in this one. "
                  "Add an SSSOM mapping saying where the others go."),
    "BE860": Code("examples need relabeling", "Reused examples whose class cannot be carried "
                  "into the new taxonomy automatically (a split class: narrowMatch or several "
                  "targets; a closeMatch; no mapping row) are left out, counted per class. With "
                  "`ambiguous: refuse` this is an error. Annotate them in the new label set."),
    "BE861": Code("tied votes", "Two or more classes share the most annotators of an example, "
                  "so it gets no label (the majority rule, docs/labels.md). Add an annotation to "
                  "break each tie."),
    "BE862": Code("label key not in the dataset", "A label set annotates examples whose key the "
                  "dataset does not hold: the export belongs to another dataset version, or "
                  "`key` names the wrong column. Keys are shown only for unrestricted "
                  "datasets."),
    "BE863": Code("double exposure", "An annotator labeled the same example under two "
                  "different annotation UI versions (in any label sets of the multiverse): the "
                  "second judgment is not independent of the first. With `exposure: exclusive` "
                  "(the default) this is an error; `exposure: allow` on every label set "
                  "involved makes it a warning."),
    "BE864": Code("ctx.labels() without a label set", "The training calls `ctx.labels()`, but "
                  "the environment takes its label from a column (or has no label). Read the "
                  "label column with `ctx.read`, or build against an environment whose `label:` "
                  "names a label set."),
    "BE865": Code("label set not used by the training", "The environment's label comes from a "
                  "label set but the training never calls `ctx.labels()`: the build scores the "
                  "model on the label set's labels, which the training did not fit."),
    "BE866": Code("no usable labels", "After ties, relabeling and keys, the environment's label "
                  "set leaves no example of its dataset with a label: there is nothing to train "
                  "on. `buildenv labels ENV` shows the counts."),
    "BE867": Code("label field not in export", "No annotation of the export has a result from "
                  "the label set's `field` (the Label Studio `from_name`). The message lists the "
                  "from_names the export has."),
    "BE868": Code("invalid tasks request", "`buildenv tasks` was asked for something it cannot do: a label set the "
                  "environment does not declare, an unknown --select, an empty or repeated --annotators, "
                  "an annotator id that cannot name a file (a '/', '\\', a control character, '.' or "
                  "'..'), --overlap below 1 or larger than the annotators listed, a negative --seed, an --out that is not a new or empty "
                  "directory, or --select conflict without labeling functions over the same examples."),
    "BE869": Code("examples cannot be covered", "Some chosen examples cannot get --overlap annotators who have not "
                  "labeled them under another UI version (or already in this label set): sending them would "
                  "be a double exposure. They are counted (and listed for unrestricted data) with how many "
                  "annotators are eligible; nothing is written. Add annotators or lower --overlap."),
    "BE870": Code("invalid labeling functions", "A label set's `source.functions` module is missing, does not parse, "
                  "defines no function decorated "
                  "`@buildenv.labeling_function(columns=[...])`, or a decorated function "
                  "does not take exactly one parameter (the batch), does not list its "
                  "columns literally, or is defined twice."),
    "BE871": Code("labeling function column undeclared", "A labeling function declares a column its label set's dataset does not "
                  "have, or at run time reads a column of the batch it did not declare in "
                  "`columns=[...]`. The batch holds exactly the declared columns."),
    "BE872": Code("labeling function raised", "A labeling function (or its module, when imported) raised an exception. "
                  "The message names the function, its line and the batch's file; on "
                  "restricted data the exception message is left out so that no row value "
                  "is shown."),
    "BE873": Code("labeling function returned bad votes", "A labeling function returns one value per row of its batch (it is "
                  "vectorised: a Series, array or list as long as the batch), each a class "
                  "name or None to abstain. The message says what came back."),
    "BE874": Code("vote outside the taxonomy", "A labeling function voted for classes the label set's taxonomy does not "
                  "list; the votes are counted per class (shown only for unrestricted "
                  "data). Fix the rule, or add the class in a new taxonomy version."),
    "BE875": Code("labeling functions changed", "A label set computed by labeling functions is stale: functions were "
                  "added, removed or changed, or its dataset changed since the lock pinned "
                  "it. The message names the functions and files. Run `buildenv lock ENV`: "
                  "only the changed functions and files are applied again."),
    "BE876": Code("label coverage below minimum", "Fewer rows of the dataset get a label from the labeling functions than "
                  "the label set's `source.min_coverage` asks. The lock that fails writes "
                  "nothing, so the error lists each function's coverage (not for a "
                  "restricted dataset); `buildenv labels ENV` shows every figure once the set "
                  "locks. Add rules, or lower the gate meanwhile."),
    "BE877": Code("label conflicts above maximum", "More rows get votes for two or more classes than the label set's "
                  "`source.max_conflict` allows. The lock that fails writes nothing, so the "
                  "error lists each function's conflicts (not for a restricted dataset); "
                  "`buildenv labels ENV` and `buildenv tasks --select conflict` work once the "
                  "set locks. Tighten the rules that disagree, or relax the gate meanwhile."),
    "BE878": Code("invalid computed label set", "A label set with `source: {functions}` has no export: it takes no `uri` "
                  "or `field`; its `gold` is an annotated label set (not computed) of the "
                  "same dataset, key and classes; each glob of its `files` matches a file of "
                  "the repository."),
    "BE879": Code("restricted examples refused", "`buildenv tasks` would send examples of a restricted dataset to annotators that the "
                  "environment's `privacy.annotators` does not list. Nothing is written. Review who may see "
                  "the data, and list them there; every export is recorded in the audit log."),
    # --- executors --------------------------------------------------------------
    "BE880": Code("Ray not installed", "`--executor ray` (or `[tool.buildenv] executor = "
                  "\"ray\"`) needs the optional extra: `pip install 'buildenv[ray]'`. Or run "
                  "with `--executor local`. A `ray://` address (Ray Client) also needs "
                  "`pip install 'ray[client]'` at Ray's version."),
    "BE881": Code("Ray cluster does not answer", "The Ray address (`BUILDENV_RAY_ADDRESS`, "
                  "else `RAY_ADDRESS`) did not accept a connection, or Ray did not connect "
                  "within `BUILDENV_RAY_TIMEOUT` seconds (default 30). Check the address: "
                  "`ray://head:10001` for Ray Client from outside the cluster, `head:6379` from "
                  "inside it."),
    "BE882": Code("Ray task failed", "A Ray task died (a worker ran out of memory or was "
                  "killed, an object was lost) after Ray's retries. Nothing it computed is "
                  "used; the worker's log says why. Data problems are never this code: tasks "
                  "report them as diagnostics."),
    "BE883": Code("dataset out of the cluster's reach", "`build --all --executor ray` with a "
                  "Ray cluster: a dataset is at a path relative to the repository, which the "
                  "workers cannot read. Refused before anything is scheduled, at the uri's "
                  "line: put the data in object storage, or on a file system mounted at the "
                  "same path on every node named by a `file:///` uri."),
    "BE884": Code("training larger than every node", "`build --all --executor ray`: a "
                  "training's `resources` (cpus, memory_gb) exceed what every live node of the "
                  "Ray cluster has. Refused before anything is scheduled, at the training's "
                  "`resources` in pyproject.toml, naming the training and the largest node."),
    "BE885": Code("Ray cluster runs other versions", "`build --all --executor ray` with a Ray "
                  "cluster whose workers run another Python (major.minor) or buildenv version "
                  "than the driver: refused before scheduling, naming both. Install the "
                  "driver's versions in the cluster's image."),
    "BE886": Code("uncommitted changes shipped", "A note of `build --executor ray` with a Ray "
                  "cluster: git reports uncommitted changes in the repository. The working "
                  "tree is shipped as it is, and each artifact's code digest is of the files "
                  "shipped, not of a commit. Commit first to build what a commit names."),
    "BE887": Code("Ray cluster refused the token", "The Ray cluster at the address answered "
                  "but uses token authentication, and the token this machine gives is missing "
                  "or wrong (Ray's own logs then repeat `InvalidAuthToken`). Set "
                  "`RAY_AUTH_MODE=token` and the cluster's token (`RAY_AUTH_TOKEN`, "
                  "`RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`) in buildenv's environment."),
    "BE888": Code("drift of restricted computed labels", "`buildenv drift --labels` "
                  "refuses a label set computed by labeling functions over a restricted dataset "
                  "(or one reusing such a set): the designer of the functions chooses which "
                  "rows get a label, so exact totals and class counts would tell whether a "
                  "given row passed a function. `buildenv labels ENV` shows the set's figures "
                  "as the privacy policy releases them."),
    "BE889": Code("key on several labeled rows", "A label set computed by labeling "
                  "functions labels rows, and its key names an example: when several rows of "
                  "the dataset carry one key, the key takes the label of its last labeled row "
                  "(file order), whatever the others got, and a training reads every row of "
                  "the key with that label. `buildenv labels ENV` counts the keys (and those whose rows "
                  "got different labels); over a restricted dataset it says only that the "
                  "dataset's keys repeat. Label a dataset with one row per key, or key the set "
                  "by a column that names one row."),
    # --- importers (buildenv import) ---------------------------------------------------------
    "BE900": Code("cannot read import file", "`buildenv import` could not read the suite or "
                  "schema file: it does not exist, is not readable, or is not UTF-8 text."),
    "BE901": Code("not an expectation suite", "`buildenv import gx` reads a Great Expectations "
                  "expectation suite saved as JSON (GX 0.x or 1.x): an object with an "
                  "`expectations` list, each entry with `type` (or `expectation_type`) and "
                  "`kwargs`. The location points at invalid JSON when that is the cause."),
    "BE902": Code("not a TFDV schema", "`buildenv import tfdv` reads a TFDV schema in protobuf "
                  "text format (what `tfdv.write_schema_text` writes): `feature { name: ... "
                  "type: ... }` entries. The location points at the token the reader stopped "
                  "on."),
    "BE903": Code("expectation not translated", "An expectation of the suite has no "
                  "equivalent in the environment format; the message says why (an aggregate "
                  "statistic, several columns, a row condition, a deny-list, a regex RE2 "
                  "cannot compile, ...). Nothing was printed for it: keep checking it in Great "
                  "Expectations, or drop it knowingly."),
    "BE904": Code("TFDV field not translated", "A field of the TFDV schema has no equivalent in "
                  "the environment format; the message says why (skew comparators, list-valued "
                  "features, counts, semantic domains, ...). Nothing was printed for it."),
    "BE905": Code("translated approximately", "Something was translated, but not exactly: a "
                  "dtype inferred from the values a suite compares with (no type expectation), "
                  "several tolerances (`mostly`) merged into the column's one "
                  "`max_violation_fraction`, column order or exact column sets dropped. Check "
                  "the printed key."),
    "BE906": Code("not a Feast repository", "`buildenv import feast REPO` reads a Feast "
                  "feature repository: a directory with `feature_store.yaml` whose registry "
                  "was written by `feast apply`. A repository never applied has no registry."),
    "BE907": Code("unknown feature service", "The repository's registry has no feature service "
                  "of that name; the message lists the services it has."),
    "BE908": Code("Feast item not translated", "A feature of the service has no equivalent "
                  "in the environment format (a list, map or bytes type; an on-demand or "
                  "stream view). Nothing was written for it; the message says what it was."),
    "BE909": Code("Feast environment unavailable", "Feast runs in its own Python environment "
                  "(it needs pandas < 3, which buildenv's own pins exclude): buildenv creates "
                  "it under `.buildenv/toolchains/` with pip, or uses the interpreter named by "
                  "`BUILDENV_FEAST_PYTHON`. It could not be created or failed; the message "
                  "says how."),
}


def explain(code: str) -> str | None:
    entry = CODES.get(code.upper())
    if entry is None:
        return None
    return f"{code.upper()}: {entry.title}\n\n{entry.explanation}"
