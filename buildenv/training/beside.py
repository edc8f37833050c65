"""Work in a thread beside the main one: during the full fit (`Judge`, `preload`: the
pre-check's deferred verdict and the imports saving needs), and after it (`Beside`: a value or
an exception taken back in order).

After the full fit the machine's cores are free: the runner evaluates the trained model while
it converts and saves it, and checks parity while it computes permutation importance (NumPy,
scikit-learn's predictors and onnxruntime release the GIL for most of it). Each side writes only
its own state; the runner merges what both found in the serial order, so results, diagnostics
and artifacts are the same bytes as when the steps ran one after the other.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Beside", "Judge", "preload", "preloaded", "stops"]

# Deferred imports (mlflow, onnx, onnxruntime, buildenv): importing them early, in
# a thread, is the point of this module's preloading; at its top they would slow every runner.

T = TypeVar("T")


class Beside(Generic[T]):
    """`work()` started in a daemon thread; `result()` joins it and returns its value or
    re-raises its exception (BaseException included) on the calling thread."""

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"buildenv-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as exc:  # taken back by result(), on the caller's thread
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        value: T = self._value
        return value


_PRELOAD: list[Any] = []  # the thread importing what saving needs


def preload(env: Any) -> None:
    """Import MLflow while the user's full fit runs (when saving will need it: not for a
    skops scikit-learn model, `mlmodel_writer`): it is needed only to save the model, and
    its import is seconds of mostly-Python work that overlaps well with numeric code (started
    earlier, it competed for the interpreter with the training module's own imports and the
    pre-check, which are Python too, and lengthened them by as much). `preloaded` waits for it
    before anything else imports MLflow: two threads importing one package's cycle of modules
    at once can see it half-initialised. (skops is not preloaded:
    building its table of safe types imports every scikit-learn module, which the training
    imports too.)"""
    thread = threading.Thread(target=_preload_all, args=(env,), name="buildenv-preload",
                              daemon=True)
    thread.start()
    _PRELOAD.append(thread)


def _saved_by_mlflow(env: Any) -> bool:
    """Whether saving will import MLflow (`mlmodel_writer.mlflow_saves`): a skops
    scikit-learn model's directory is written without it, and then neither MLflow nor its
    requirements table is loaded here, where the fit would pay for them."""
    try:
        from buildenv.training.mlmodel_writer import mlflow_saves

        return mlflow_saves(env)
    except Exception:
        return True


def _import_mlflow(env: Any) -> None:
    from buildenv.env.spec import OnnxServing

    try:
        if isinstance(env.serving, OnnxServing):
            import mlflow.onnx
        else:
            import mlflow.sklearn  # noqa: F401
    except Exception:
        pass


def _preload_all(env: Any) -> None:
    if _saved_by_mlflow(env):
        _import_mlflow(env)
        _mlflow_requirements()
    _read_distributions()


def _read_distributions() -> None:
    """The installed distributions' table describing the model reads
    (`installed.distributions_by_package`), read while the fit runs (unless the forked
    pre-check read it on its own core and handed it back: then this returns at once)."""
    from buildenv.training.installed import distributions_by_package

    try:
        distributions_by_package()
    except Exception:
        pass


def preloaded() -> None:
    while _PRELOAD:
        _PRELOAD.pop().join()


class Judge:
    """Work for the core a threads=1 fit leaves free, in a thread while the full fit runs on
    the main one: the pre-check's conversion of the sample model when it was deferred (the
    converters' imports and work: seconds of plain Python), or waiting for the verdict of the
    pre-check's own process (`precheck_fork`), then the imports saving and loading the
    served model need (`_warm`), and MLflow's when saving needs it. Only after the pre-check: the
    training's own imports are done by then, so no module is imported by both threads at
    once. A refusal still stops the build in seconds: the thread sends the main thread
    SIGINT, whose KeyboardInterrupt ends the fit at its next Python step."""

    def __init__(self, work: Any, env: Any) -> None:
        self._work = work
        self._env = env
        self._verdict: dict | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._fitting = False
        self._interrupted = False
        self._decided = threading.Event()  # the verdict is known (or its work failed)
        self._thread = threading.Thread(target=self._run, name="buildenv-precheck",
                                        daemon=True)

    def _run(self) -> None:
        try:
            if self._work is not None:
                self._verdict = self._work()
        except BaseException as exc:  # re-raised on the main thread, after the fit
            self._error = exc
        self._decided.set()
        if stops(self._verdict):
            with self._lock:
                if self._fitting and signal.getsignal(signal.SIGINT) is \
                        signal.default_int_handler:
                    self._interrupted = True
                    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                    return
        _warm(self._env)
        if _saved_by_mlflow(self._env):
            _import_mlflow(self._env)  # after the rest: one thread imports at a time
            _mlflow_requirements()
        _read_distributions()

    def alongside(self, fit: Any) -> tuple[Any, dict | None]:
        """(the full fit's model, or None when the verdict interrupted it; the deferred
        verdict, None when nothing was deferred). When the fit fails, a verdict that stops
        the build is still the result, as when the pre-check ran first."""
        model = None
        try:
            try:
                with self._lock:
                    self._fitting = True
                self._thread.start()
                model = fit()
            finally:
                with self._lock:
                    self._fitting = False
            self._thread.join()
        except KeyboardInterrupt:
            if not self._interrupted:
                raise
            self._thread.join()
        except BaseException:  # the full run failed: a verdict that stops comes first
            self._decided.wait()
            if self._error is None and stops(self._verdict):
                return None, self._verdict
            raise
        if self._error is not None:
            raise self._error
        return model, self._verdict


def stops(verdict: dict | None) -> bool:
    """Whether a pre-check's verdict ends the build: a refusal, or a failure of the sample run
    that the full run would meet too (`precheck_fork`'s `failed`)."""
    return verdict is not None and bool(verdict.get("refused") or verdict.get("failed"))


def _mlflow_requirements() -> None:
    """MLflow's own table of which distribution provides which module: saving a model checks
    the model's requirements against the installed versions with it, and builds it by reading
    every installed distribution's metadata (about 0.4 s of CPU); built here beside the fit.
    (A private function: without it, MLflow builds the table when it saves.)"""
    try:
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()
    except Exception:
        pass


def _warm(env: Any) -> None:
    """Import what saving and loading the served model back will need: the onnx stack's
    runtime, or skops (whose table of safe types imports every scikit-learn module, unless
    the build's cached table fits: `skops_table`). Only
    speed depends on it: a failure here is met again, and reported, where the import is
    needed."""
    from buildenv.env.spec import OnnxServing

    try:
        if isinstance(env.serving, OnnxServing):
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        elif env.serving is None or env.serving.format == "skops":
            from buildenv.training.skops_table import import_with

            import_with()  # skops' scikit-learn table from the build's cache when it fits
    except Exception:
        pass
