"""Integrity before deserialisation: a model's bytes are checked before anything loads them.

Every place that loads a model (promotion and its evaluation, retrain, `image`, the serving
app) first hashes the artifact's files and compares the digest with the record made when it
was built: the registry's `buildenv.artifact_digest` tag for a registered version, the
lineage's `model_digest` for a directory. On a mismatch it refuses (BE761) and the file is
never opened. Then the model file is loaded with the *environment's* trust (`load_verified_model`):
a skops file may hold only the types `serving.ops` allow, a pickle loads only where the
environment opts in to `serving.format: pickle` (or from an artifact built before buildenv
saved pickle-free, whose bytes the digest vouches for), and an ONNX file goes to onnxruntime
(BE773 when any of them refuses).

Signing (optional, offline): with a private key configured (`BUILDENV_SIGNING_KEY` or
`[tool.buildenv] signing_key`, a PEM elliptic-curve key), builds write `buildenv.sig`, a
Sigstore bundle over every other file of the artifact (lineage included), made with
model-signing and no network. With a public key configured (`BUILDENV_VERIFY_KEY` or
`verify_key`), loading also requires that signature to verify (BE763/BE764). The digest
check needs nothing but the standard library; signing needs the `signing` extra (BE765).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from buildenv.compile.artifact import SIGNATURE_FILE, UNHASHED, read_lineage, tree_digest
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.model_runtime import ModelLoadError, ServedModel, load, trusted_patterns
from buildenv.core.project import Project
from buildenv.env.spec import Environment, SklearnServing

# Deferred imports (mlflow, model_signing): mlflow takes seconds to import and only loading a model
# needs it; model_signing is the optional `signing` extra.

__all__ = ["SIGNING_KEY_ENV", "VERIFY_KEY_ENV", "artifact_digest", "load_verified_model",
           "model_descriptor", "sign_artifact", "signing_key", "verify_artifact", "verify_key",
           "verify_signature"]

SIGNING_KEY_ENV = "BUILDENV_SIGNING_KEY"
VERIFY_KEY_ENV = "BUILDENV_VERIFY_KEY"


def artifact_digest(directory: Path) -> str:
    """The digest recorded as `model_digest` / `buildenv.artifact_digest`."""
    return tree_digest(directory, exclude=UNHASHED)


def verify_artifact(project: Project, directory: Path, expected: str | None, what: str) -> None:
    """Refuse unless `directory`'s files hash to `expected` (and the signature verifies, when
    a verification key is configured)."""
    if not expected:
        raise DiagnosticError([Diagnostic(
            "BE762", f"{what} has no recorded artifact digest, so its files cannot be checked "
            "before loading; buildenv does not load it",
            hints=("register it with `buildenv build` (or `buildenv register`), which records "
                   "the digest",))])
    actual = artifact_digest(directory)
    if actual != expected:
        raise DiagnosticError([Diagnostic(
            "BE761", f"{what}: its files hash to {_short(actual)}, but {_short(expected)} was "
            f"recorded when it was built; it was modified, and was not loaded",
            hints=(f"location: {project.rel(directory)}",
                   "rebuild it, or find out who changed it: a modified pickle can run "
                   "arbitrary code when loaded"))])
    verify_signature(project, directory, what)


def load_verified_model(project: Project, directory: Path, expected: str | None,
                        what: str, env: Environment) -> ServedModel:
    """The served model (`core.model_runtime`), only after `verify_artifact` passed, with
    `env`'s trust."""
    verify_artifact(project, directory, expected, what)
    descriptor, legacy = model_descriptor(directory)
    serving = env.serving
    ops = list(serving.ops) if isinstance(serving, SklearnServing) else []
    pickles = legacy or (isinstance(serving, SklearnServing) and serving.format == "pickle")
    try:
        return load(str(directory), descriptor, trusted_patterns(ops), allow_pickle=pickles)
    except ModelLoadError as exc:
        raise DiagnosticError([Diagnostic(
            "BE773", f"{what}: {exc}; it was not loaded",
            hints=(f"location: {project.rel(directory)}",))]) from None


def model_descriptor(directory: Path) -> tuple[dict, bool]:
    """(the artifact's descriptor, whether it was built before descriptors existed: then it is
    a cloudpickle, described from its MLmodel and lineage)."""
    try:
        data = yaml.safe_load((directory / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    found = (data.get("metadata") or {}).get("buildenv")
    if isinstance(found, dict):
        return found, False
    flavor = (data.get("flavors") or {}).get("sklearn") or {}
    lineage = read_lineage(directory) or {}
    return {"format": "pickle", "file": flavor.get("pickled_model", "model.pkl"),
            "inputs": lineage.get("inputs") or []}, True


# --- signing --------------------------------------------------------------------------------

def _configured(project: Project, env: str, key: str | None) -> Path | None:
    value = os.environ.get(env) or key
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else project.root / path


def signing_key(project: Project) -> Path | None:
    return _configured(project, SIGNING_KEY_ENV, project.config.signing_key)


def verify_key(project: Project) -> Path | None:
    return _configured(project, VERIFY_KEY_ENV, project.config.verify_key)


def _model_signing():
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as exc:
        raise DiagnosticError([Diagnostic(
            "BE765", f"a signing or verification key is configured, but the `signing` extra is "
            f"not installed ({exc.name or exc})",
            hints=("pip install 'buildenv[signing]' (model-signing, pyopenssl), or unset "
                   f"{SIGNING_KEY_ENV} / {VERIFY_KEY_ENV}",))], 2) from None
    return model_signing


def _hashing(ms: Any) -> Any:
    return ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def _bad_key(path: Path, exc: Exception) -> DiagnosticError:
    return DiagnosticError([Diagnostic(
        "BE766", f"cannot use key {path}: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}",
        hints=("a PEM elliptic-curve key (P-256/P-384/P-521) is expected",))], 2)


def sign_artifact(project: Project, directory: Path) -> bool:
    """Write `buildenv.sig` over the artifact's files when a signing key is configured."""
    key = signing_key(project)
    if key is None:
        return False
    ms = _model_signing()
    try:
        config = ms.signing.Config().use_elliptic_key_signer(private_key=key)
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # not a (PEM EC) key
        raise _bad_key(key, exc) from None
    config.set_hashing_config(_hashing(ms)).sign(directory, directory / SIGNATURE_FILE)
    return True


def verify_signature(project: Project, directory: Path, what: str) -> None:
    key = verify_key(project)
    if key is None:
        return
    signature = directory / SIGNATURE_FILE
    if not signature.is_file():
        raise DiagnosticError([Diagnostic(
            "BE764", f"{what} is not signed ({SIGNATURE_FILE} is missing), and a verification "
            f"key is configured ({key}); it was not loaded",
            hints=(f"build it with {SIGNING_KEY_ENV} set to the matching private key",))])
    ms = _model_signing()
    try:
        config = ms.verifying.Config().use_elliptic_key_verifier(public_key=key)
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # not a (PEM EC) key
        raise _bad_key(key, exc) from None
    try:
        config.set_hashing_config(_hashing(ms)).verify(directory, signature)
    except Exception as exc:  # model-signing raises ValueError, protobuf and crypto errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DiagnosticError([Diagnostic(
            "BE763", f"{what}: the signature does not verify with {key}: {first[:200]}",
            hints=("its files changed after signing, or another key signed them; it was "
                   "not loaded",))]) from None


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]
