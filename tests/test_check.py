"""`buildenv check`: static checks of training code, located at the exact token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import PYPROJECT, TRAIN_DEMO, invoke_cli, write_repo


def check(tmp_path: Path, source: str, env: str = "base", pyproject: str | None = None,
          extra: tuple[str, ...] = ()) -> tuple[int, str, list[str]]:
    files = {"train/demo.py": textwrap.dedent(source)}
    if pyproject is not None:
        files["pyproject.toml"] = pyproject
    root = write_repo(tmp_path, files=files)
    code, out, err = invoke_cli(["check", "demo", "--env", env, *extra], root)
    return code, out, err.splitlines()


def test_clean_training_passes(tmp_path):
    assert check(tmp_path, TRAIN_DEMO) == (0, "demo @ base: static checks passed\n", [])
    assert check(tmp_path / "c", TRAIN_DEMO, env="child")[0] == 0


def test_undeclared_dataset_points_at_the_string(tmp_path):
    code, out, err = check(tmp_path, """\
        def train(ctx):
            m = ctx.read("movie", columns=["movie_id"])
            u = ctx.read(
                "users", columns=["user_id"])
        """)
    assert (code, out) == (1, "")
    assert err == [
        "train/demo.py:2:18: error[BE101]: dataset 'movie' is not declared in environment base",
        "  hint: did you mean 'movies'?",
        "train/demo.py:4:9: error[BE101]: dataset 'users' is not declared in environment base",
        "  hint: declared datasets: movies, ratings",
    ]


def test_undeclared_columns_point_at_each_string(tmp_path):
    code, _, err = check(tmp_path, """\
        def train(ctx):
            r = ctx.read("ratings", columns=["movie_id",
                                             "likd"])
            s = ctx.read(dataset="movies", columns=("critic_scores", "genre", "zzz"))
        """)
    assert code == 1
    assert err == [
        "train/demo.py:3:38: error[BE102]: column 'likd' is not in dataset 'ratings' of "
        "environment base",
        "  hint: did you mean 'liked'?",
        "train/demo.py:4:45: error[BE102]: column 'critic_scores' is not in dataset 'movies' of "
        "environment base",
        "  hint: did you mean 'critic_score'?",
        "train/demo.py:4:71: error[BE102]: column 'zzz' is not in dataset 'movies' of "
        "environment base",
    ]


def test_columns_depend_on_the_environment(tmp_path):
    source = """\
        def train(ctx):
            return ctx.read("movies", columns=["budget"])
        """
    root = write_repo(tmp_path, files={"train/demo.py": textwrap.dedent(source)}, envs={
        "rich": "name: rich\nextends: base\ndatasets:\n  movies:\n    columns:\n"
                "      budget: {dtype: float64}\n"})
    assert invoke_cli(["check", "demo", "--env", "rich"], root)[0] == 0
    code, _, err = invoke_cli(["check", "demo", "--env", "base"], root)
    assert code == 1
    assert err.splitlines() == [
        "train/demo.py:2:40: error[BE102]: column 'budget' is not in dataset 'movies' of "
        "environment base",
    ]


def test_ctx_is_whatever_the_entry_names_it_and_helpers_are_checked(tmp_path):
    code, _, err = check(tmp_path, """\
        def load(context):
            return context.read("movies", columns=["genra"])


        def train(context):
            other = object()
            other.read("anything", columns=["x"])  # not the context: ignored
            load(context)
            return context.read("ratngs", columns=["liked"])
        """)
    assert code == 1
    assert err == [
        "train/demo.py:2:44: error[BE102]: column 'genra' is not in dataset 'movies' of "
        "environment base",
        "  hint: did you mean 'genre'?",
        "train/demo.py:9:25: error[BE101]: dataset 'ratngs' is not declared in environment base",
        "  hint: did you mean 'ratings'?",
    ]


def test_functions_the_entry_never_names_are_not_its_reads(tmp_path):
    # one module, several entries (two trainings, two transforms): each is checked against its
    # own environment; a helper named anywhere it reaches (called or passed) is checked
    code, _, err = check(tmp_path, """\
        def other_entry(ctx):
            return ctx.read("elsewhere", columns=["x"])


        def passed(ctx):
            return ctx.read("movies", columns=["genra"])


        def train(ctx):
            return list(map(passed, [ctx]))
        """)
    assert code == 1
    assert err == [
        "train/demo.py:6:40: error[BE102]: column 'genra' is not in dataset 'movies' of "
        "environment base",
        "  hint: did you mean 'genre'?",
    ]


def test_reading_every_declared_column_needs_no_list(tmp_path):
    code, out, err = check(tmp_path, """\
        def train(ctx):
            a = ctx.read("movies")
            b = ctx.read("ratings", columns=None)
        """)
    assert (code, out, err) == (0, "demo @ base: static checks passed\n", [])


def test_dynamic_reads_are_warnings(tmp_path):
    code, out, err = check(tmp_path, """\
        COLS = ["genre"]
        COLS = COLS + ["x"]  # bound twice: unknown


        def train(ctx):
            a = ctx.read(pick(), columns=["genre"])
            b = ctx.read("movies", columns=COLS)
            c = ctx.read("movies", columns=[c.lower() for c in ["genre"]])
        """)
    assert (code, out) == (0, "demo @ base: static checks passed\n")
    assert err == [
        "train/demo.py:6:9: warning[BE105]: ctx.read with a non-literal dataset name cannot be "
        "checked statically",
        "train/demo.py:7:9: warning[BE105]: ctx.read without a literal `columns=[...]` list "
        "cannot be checked statically",
        "train/demo.py:8:9: warning[BE105]: ctx.read without a literal `columns=[...]` list "
        "cannot be checked statically",
    ]


def test_module_constants_are_folded_and_checked(tmp_path):
    """How trainings name their features: module-level lists, added up, imported from a shared
    module. Each name is checked where it is written; one from another module at the name
    that brings it in."""
    files = {"train/features.py": 'CAT = ["genre", "budget"]\n',
             "train/demo.py": textwrap.dedent("""\
                 from train.features import CAT as CATEGORIES

                 NAME = "movies"
                 NUM = ["runtime_minutes"]
                 LABEL = "liked"
                 KEYS: list = ["movie_id"]


                 def train(ctx):
                     a = ctx.read(NAME, columns=CATEGORIES + NUM + ["critic_score"])
                     b = ctx.read("ratings", columns=[*KEYS, LABEL, "likd"])
                     c = ctx.read("movies", columns=list(NUM) + ["genre", NAME])
                     d = ctx.read("ratings", columns=tuple(KEYS) + (LABEL,))
                 """)}
    root = write_repo(tmp_path, files=files)
    code, out, err = invoke_cli(["check", "demo", "--env", "base"], root)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "train/demo.py:10:32: error[BE102]: column 'budget' is not in dataset 'movies' of "
        "environment base",
        "train/demo.py:11:52: error[BE102]: column 'likd' is not in dataset 'ratings' of "
        "environment base",
        "  hint: did you mean 'liked'?",
        "train/demo.py:12:58: error[BE102]: column 'movies' is not in dataset 'movies' of "
        "environment base",
        "  hint: did you mean 'movie_id'?",
    ]


def test_estimator_import_not_in_serving_ops_is_a_warning(tmp_path):
    code, out, err = check(tmp_path, """\
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import GridSearchCV, train_test_split
        from sklearn.metrics import RocCurveDisplay
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        from sklearn.pipeline import make_pipeline
        import sklearn.tree


        def train(ctx):
            from sklearn.svm import SVC
            return None
        """)
    assert (code, out) == (0, "demo @ base: static checks passed\n")
    assert err == [
        "train/demo.py:1:1: warning[BE106]: RandomForestClassifier is imported but serving stack "
        "'sklearn' of environment base does not list sklearn.ensemble.RandomForestClassifier in "
        "serving.ops",
        "  hint: the verify stage will refuse the model if it contains it",
        "train/demo.py:11:5: warning[BE106]: SVC is imported but serving stack 'sklearn' of "
        "environment base does not list sklearn.svm.SVC in serving.ops",
        "  hint: the verify stage will refuse the model if it contains it",
    ]


def test_estimator_allowed_by_an_extended_environment(tmp_path):
    source = "from sklearn.ensemble import RandomForestClassifier\n\n\ndef train(ctx):\n    pass\n"
    root = write_repo(tmp_path, files={"train/demo.py": source}, envs={
        "trees": "name: trees\nextends: base\nserving:\n  ops: [sklearn.ensemble.*]\n"})
    assert invoke_cli(["check", "demo", "--env", "trees"], root) == (
        0, "demo @ trees: static checks passed\n", "")


def test_syntax_error_location(tmp_path):
    code, out, err = check(tmp_path, """\
        def train(ctx):
            x = [1, 2
            return x
        """)
    assert (code, out) == (1, "")
    assert err == ["train/demo.py:2:9: error[BE100]: syntax error: '[' was never closed"]


def test_syntax_error_unclosed_paren(tmp_path):
    code, _, err = check(tmp_path, "def train(ctx:\n    pass\n")
    assert code == 1
    assert err == ["train/demo.py:1:10: error[BE100]: syntax error: '(' was never closed"]


def test_missing_entry_function(tmp_path):
    code, out, err = check(tmp_path, "def trian(ctx):\n    pass\n")
    assert (code, out) == (1, "")
    assert err == [
        "pyproject.toml:9:1: error[BE103]: 'train/demo.py' defines no top-level function 'train'",
        "  hint: did you mean 'trian'?",
    ]


def test_nested_function_is_not_an_entry(tmp_path):
    code, _, err = check(tmp_path, "class T:\n    def train(self, ctx):\n        pass\n")
    assert code == 1
    assert err == [
        "pyproject.toml:9:1: error[BE103]: 'train/demo.py' defines no top-level function 'train'",
    ]


@pytest.mark.parametrize("signature, line", [
    ("def train(ctx, extra):", 1),
    ("def train():", 1),
    ("def train(ctx, *, required):", 1),
    ("async def train(ctx):", 1),
    ("import os\n\n\ndef train(*args):", 4),
])
def test_bad_entry_signature(tmp_path, signature, line):
    code, _, err = check(tmp_path, f"{signature}\n    pass\n")
    assert code == 1
    assert err == [
        f"train/demo.py:{line}:1: error[BE104]: entry 'train' must take exactly one parameter, "
        "the build context: `def train(ctx):`",
    ]


@pytest.mark.parametrize("signature", ["def train(ctx, extra=1):", "def train(ctx, /):",
                                       "def train(ctx, *, k=2, **kw):"])
def test_acceptable_signatures(tmp_path, signature):
    assert check(tmp_path, f"{signature}\n    pass\n")[0] == 0


def test_module_not_found(tmp_path):
    code, out, err = check(tmp_path, TRAIN_DEMO,
                           pyproject=PYPROJECT.replace("train/demo.py", "train/nope.py"))
    assert (code, out) == (1, "")
    assert err == [
        "pyproject.toml:9:1: error[BE107]: training 'demo': module 'train/nope.py' not found",
        "  hint: entry is `path/relative/to/root.py:function`",
    ]


def test_unknown_training_and_environment(repo):
    code, _, err = invoke_cli(["check", "demoo", "--env", "base"], repo)
    assert code == 2
    assert err.splitlines() == ["pyproject.toml: error[BE017]: unknown training 'demoo'",
                                "  hint: did you mean 'demo'?"]
    code, _, err = invoke_cli(["check", "demo", "--env", "bsae"], repo)
    assert code == 2
    assert err.splitlines() == ["buildenv: error[BE014]: unknown environment 'bsae'",
                                "  hint: did you mean 'base'?"]


def test_invalid_training_config_is_be016(tmp_path):
    root = write_repo(tmp_path, files={"pyproject.toml": PYPROJECT.replace(
        'entry = "train/demo.py:train"', 'entry = "train/demo.py"')})
    code, _, err = invoke_cli(["check", "demo", "--env", "base"], root)
    assert code == 2
    assert err.splitlines() == [
        "pyproject.toml:9:1: error[BE016]: trainings.demo.entry: 'train/demo.py' is not "
        "`path/to/module.py:function` (relative to the repository root)",
        '  hint: e.g. entry = "trainings/churn.py:train"']


def test_all_problems_sorted_with_json_and_sarif(tmp_path):
    source = """\
        from sklearn.ensemble import RandomForestClassifier


        def train(ctx):
            a = ctx.read("movies", columns=["genra"])
            b = ctx.read("movie", columns=["x"])
        """
    code, out, _ = check(tmp_path, source, extra=("--format", "json"))
    assert code == 1
    diags = json.loads(out)["diagnostics"]
    assert [(d["code"], d["line"], d["col"], d["severity"]) for d in diags] == [
        ("BE106", 1, 1, "warning"), ("BE102", 5, 37, "error"), ("BE101", 6, 18, "error")]
    code, out, _ = invoke_cli(["check", "demo", "--env", "base", "--format", "sarif"], tmp_path)
    assert code == 1
    results = json.loads(out)["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("BE106", "warning"), ("BE102", "error"), ("BE101", "error")]


def test_check_never_imports_the_training_nor_heavy_libraries(tmp_path):
    """`check` parses, it does not run: the training's top level must not execute, and the
    command must not pay for pandas/sklearn/mlflow imports."""
    source = TRAIN_DEMO + "\nimport pathlib\npathlib.Path(__file__).with_name('RAN').touch()\n"
    root = write_repo(tmp_path, files={"train/demo.py": source})
    probe = textwrap.dedent("""\
        import sys
        from buildenv.cli import main
        sys.argv = ["buildenv", "check", "demo", "--env", "child"]
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        heavy = sorted({m.split(".")[0] for m in sys.modules}
                       & {"pandas", "sklearn", "mlflow", "scipy", "onnx", "onnxruntime"})
        print("RESULT", code, ",".join(heavy))
        """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.stdout.splitlines()[-1] == "RESULT 0 ", proc.stderr
    assert not (root / "train" / "RAN").exists()


def test_reads_in_imported_repository_modules_are_checked(tmp_path):
    """A shared loader module is checked too, each problem in its own file; warnings about the
    entry's imports stay located in the entry (regression: they took the last read's file)."""
    loaders = "def load(ctx):\n    return ctx.read('movies', columns=['genra'])\n"
    entry = ("from sklearn.ensemble import RandomForestClassifier\n"
             "from loaders import load\n\n\n"
             "def train(ctx):\n    return load(ctx)\n")
    root = write_repo(tmp_path, files={"train/demo.py": entry, "train/loaders.py": loaders})
    code, out, err = invoke_cli(["check", "demo", "--env", "base"], root)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "train/demo.py:1:1: warning[BE106]: RandomForestClassifier is imported but serving stack "
        "'sklearn' of environment base does not list sklearn.ensemble.RandomForestClassifier in "
        "serving.ops",
        "  hint: the verify stage will refuse the model if it contains it",
        "train/loaders.py:2:40: error[BE102]: column 'genra' is not in dataset 'movies' of "
        "environment base",
        "  hint: did you mean 'genre'?",
    ]


@pytest.mark.parametrize("reach", [
    # a registry filled by a decorator, called through a dict
    ("REG = {}\n\n\ndef register(f):\n    REG[f.__name__] = f\n    return f\n\n\n@register\n"
     "def helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    return REG[\"helper\"](ctx)\n"),
    # looked up by a computed name
    ("def helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    return globals()[\"hel\" + \"per\"](ctx)\n"),
    # the module importing itself
    ("def helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    import demo\n    return demo.helper(ctx)\n"),
])
def test_a_helper_reached_other_than_by_its_name_is_still_checked(tmp_path, reach):
    """Only plain functions nothing names are left out of an entry's reads: a decorated one
    (a decorator may register it), or any in a module that looks functions up at run time,
    is checked as before."""
    code, _, err = check(tmp_path, reach)
    assert code == 1 and any("BE102" in line and "'genra'" in line for line in err), err


@pytest.mark.parametrize("reach", [
    # a function's globals, by its attribute or a computed getattr on the function
    ("def helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    return train.__globals__[\"hel\" + \"per\"](ctx)\n"),
    ("def helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    return getattr(train, \"__glo\" + \"bals__\")[\"helper\"](ctx)\n"),
    # a frame's globals
    ("import sys\n\n\ndef helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    return sys._getframe().f_globals[\"helper\"](ctx)\n"),
    # the module by name, then a computed getattr on it
    ("import sys\n\n\ndef helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    mod = sys.modules[__name__]\n    return getattr(mod, \"hel\" + \"per\")(ctx)\n"),
    ("import importlib\n\n\ndef helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])"
     "\n\n\ndef train(ctx, name=\"helper\"):\n"
     "    return getattr(importlib.import_module(__name__), name)(ctx)\n"),
    ("def helper(ctx):\n    return ctx.read(\"movies\", columns=[\"genra\"])\n\n\n"
     "def train(ctx):\n    return eval(\"helper\")(ctx)\n"),
], ids=["__globals__", "getattr-function", "f_globals", "sys.modules", "import_module", "eval"])
def test_every_lookup_that_can_reach_a_module_function_widens_the_check(tmp_path, reach):
    code, _, err = check(tmp_path, reach)
    assert code == 1 and any("BE102" in line and "'genra'" in line for line in err), err


@pytest.mark.parametrize("body", [
    # a computed attribute of a variable the function read: a DataFrame
    "    df = ctx.read(\"movies\", columns=[\"genre\"])\n    how = \"nunique\"\n"
    "    return getattr(df, how)()\n",
    # ... of a parameter, of an attribute of one, in a lambda and a comprehension
    "    return helper(ctx.read(\"movies\", columns=[\"genre\"]), \"genre\")\n",
    "    df = ctx.read(\"movies\", columns=[\"genre\"])\n"
    "    return df.apply(lambda row: getattr(row, COLUMN), axis=1)\n",
    "    df = ctx.read(\"movies\", columns=[\"genre\"])\n"
    "    return [getattr(r, c) for r in df.itertuples() for c in [COLUMN]]\n",
    # methods named like lookups: a model's eval() and modules(), a DataFrame's eval()
    "    model = ctx.read(\"movies\", columns=[\"genre\"])\n    model.eval()\n"
    "    return list(model.modules())\n",
    "    df = ctx.read(\"movies\", columns=[\"genre\"])\n    return df.eval(\"genre\")\n",
], ids=["local", "parameter", "lambda", "comprehension", "model-methods", "dataframe-eval"])
def test_a_lookup_on_a_variable_keeps_other_entries_reads_out(tmp_path, body):
    """Two entries in one module (two trainings, two transforms over different inputs): a
    `getattr` on a DataFrame the entry holds cannot reach the other entry's function, so its
    reads are not checked against this entry's environment (they were: a false BE101)."""
    source = ("COLUMN = \"genre\"\n\n\ndef other_entry(ctx):\n"
              "    return ctx.read(\"elsewhere\", columns=[\"x\"])\n\n\n"
              "def helper(frame, column):\n    return getattr(frame, column)\n\n\n"
              "def train(ctx):\n" + body)
    code, out, err = check(tmp_path, source)
    assert (code, err) == (0, []), err
