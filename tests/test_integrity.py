"""Integrity before deserialisation, and offline signing with a local key."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from buildrepo import make_build_repo
from conftest import REPO_ROOT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from buildenv.compile.artifact import SIGNATURE_FILE, write_lineage
from buildenv.compile.integrity import (
    artifact_digest,
    load_verified_model,
    sign_artifact,
    verify_artifact,
)
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.env.spec import Environment

ENV = Environment.model_validate({
    "name": "e", "datasets": {"d": {"uri": "d.parquet", "columns": {"a": {"dtype": "int64"}}}},
    "serving": {"stack": "sklearn", "ops": ["sklearn.*"]}})


class Pwn:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_keys(directory: Path, name: str, kind: str = "ec") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    for var in ("BUILDENV_SIGNING_KEY", "BUILDENV_VERIFY_KEY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    return Project.discover(tmp_path)


@pytest.fixture
def artifact(project) -> Path:
    art = project.root / "art"
    (art / "sub").mkdir(parents=True)
    (art / "MLmodel").write_text("flavors: {}\n")
    (art / "model.pkl").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    (art / "sub" / "extra.txt").write_text("x")
    write_lineage(art, {"training": "t", "environment": "e"})
    return art


def recorded(art: Path) -> str:
    return json.loads((art / "buildenv.json").read_text())["model_digest"]


def codes(exc: pytest.ExceptionInfo) -> list[str]:
    return [d.code for d in exc.value.diagnostics]


def test_digest_matches_the_lineage_and_mismatch_is_BE761(project, artifact):
    verify_artifact(project, artifact, recorded(artifact), "the artifact")
    (artifact / "sub" / "extra.txt").write_text("y")
    with pytest.raises(DiagnosticError) as caught:
        verify_artifact(project, artifact, recorded(artifact), "the artifact")
    text = caught.value.diagnostics[0].to_text()
    assert text.startswith("buildenv: error[BE761]: the artifact: its files hash to ")
    assert "was recorded when it was built; it was modified, and was not loaded" in text
    assert "hint: location: art" in text


def test_no_record_is_BE762(project, artifact):
    with pytest.raises(DiagnosticError) as caught:
        verify_artifact(project, artifact, None, "model 't' v3 in the registry")
    assert codes(caught) == ["BE762"]


def test_a_tampered_pickle_is_never_loaded(project, artifact, tmp_path):
    marker = tmp_path / "pwned"
    (artifact / "model.pkl").write_bytes(pickle.dumps(Pwn(str(marker))))
    with pytest.raises(DiagnosticError) as caught:
        load_verified_model(project, artifact, recorded(artifact), "the artifact", ENV)
    assert codes(caught) == ["BE761"]
    assert not marker.exists()
    # the same bytes with a matching record would be loaded: the check is what stops it
    assert artifact_digest(artifact) != recorded(artifact)


def test_sign_and_verify(project, artifact, tmp_path, monkeypatch):
    private, public = write_keys(tmp_path, "key")
    before = artifact_digest(artifact)
    monkeypatch.setenv("BUILDENV_SIGNING_KEY", str(private))
    assert sign_artifact(project, artifact)
    assert (artifact / SIGNATURE_FILE).is_file()
    assert artifact_digest(artifact) == before == recorded(artifact)  # outside the digest
    monkeypatch.setenv("BUILDENV_VERIFY_KEY", str(public))
    verify_artifact(project, artifact, recorded(artifact), "the artifact")
    copy = tmp_path / "copy"  # verification does not depend on where the directory is
    shutil.copytree(artifact, copy)
    verify_artifact(project, copy, recorded(artifact), "the copy")
    # the lineage is not in the digest, but it is signed
    (copy / "buildenv.json").write_text((copy / "buildenv.json").read_text().replace(
        '"training": "t"', '"training": "u"'))
    with pytest.raises(DiagnosticError) as caught:
        verify_artifact(project, copy, recorded(artifact), "the copy")
    assert codes(caught) == ["BE763"]
    assert "the copy: the signature does not verify with" in caught.value.diagnostics[0].message


def test_unsigned_and_foreign_signatures_are_refused(project, artifact, tmp_path, monkeypatch):
    private, _ = write_keys(tmp_path, "key")
    _, other_public = write_keys(tmp_path, "other")
    monkeypatch.setenv("BUILDENV_VERIFY_KEY", str(other_public))
    with pytest.raises(DiagnosticError) as caught:
        verify_artifact(project, artifact, recorded(artifact), "the artifact")
    assert codes(caught) == ["BE764"]
    monkeypatch.setenv("BUILDENV_SIGNING_KEY", str(private))
    sign_artifact(project, artifact)
    with pytest.raises(DiagnosticError) as caught:
        verify_artifact(project, artifact, recorded(artifact), "the artifact")
    assert codes(caught) == ["BE763"]


def test_keys_from_pyproject_relative_to_the_root(project, artifact, tmp_path):
    private, public = write_keys(project.root, "k")
    (project.root / "pyproject.toml").write_text(
        '[tool.buildenv]\nsigning_key = "k.pem"\nverify_key = "k.pub"\n')
    configured = Project.discover(project.root)
    assert sign_artifact(configured, artifact)
    verify_artifact(configured, artifact, recorded(artifact), "the artifact")


def test_unusable_key_and_missing_extra(project, artifact, tmp_path, monkeypatch):
    rsa_private, _ = write_keys(tmp_path, "rsa", kind="rsa")
    monkeypatch.setenv("BUILDENV_SIGNING_KEY", str(rsa_private))
    with pytest.raises(DiagnosticError) as caught:
        sign_artifact(project, artifact)
    assert codes(caught) == ["BE766"] and caught.value.exit_code == 2
    real_import = builtins.__import__

    def no_signing(name, *args, **kwargs):
        if name.startswith("model_signing"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_signing)
    with pytest.raises(DiagnosticError) as caught:
        sign_artifact(project, artifact)
    assert codes(caught) == ["BE765"]
    assert "pip install 'buildenv[signing]'" in caught.value.diagnostics[0].hints[0]


@pytest.mark.slow
def test_builds_are_signed_and_registration_verifies(tmp_path):
    repo = make_build_repo(tmp_path / "repo")
    private, public = write_keys(tmp_path, "key")
    env = {**{k: v for k, v in os.environ.items() if k != "BUILDENV_ROOT"},
           "PYTHONPATH": str(REPO_ROOT), "BUILDENV_SIGNING_KEY": str(private),
           "BUILDENV_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def run(*args: str, **extra: str) -> tuple[int, str, str]:
        proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=repo, text=True,
                              capture_output=True, env={**env, **extra}, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr

    assert run("lock")[0] == 0
    for out in ("a", "b"):
        code, _, err = run("build", "lr", "--env", "base", "--out", out, "--no-register",
                           "--no-cache")
        assert code == 0, err
    a, b = repo / "a", repo / "b"
    assert (a / SIGNATURE_FILE).is_file()
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    for name in names:  # same inputs, same bytes: all but the (randomised ECDSA) signature
        if name != SIGNATURE_FILE:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    code, out, err = run("register", "a", "--training", "lr", "--env", "base",
                         BUILDENV_VERIFY_KEY=str(public))
    assert code == 0 and "registered lr v1" in out, err
    lineage = json.loads((b / "buildenv.json").read_text())
    lineage["metrics"]["accuracy"] = 0.999
    (b / "buildenv.json").write_text(json.dumps(lineage))
    code, out, err = run("register", "b", "--training", "lr", "--env", "base",
                         BUILDENV_VERIFY_KEY=str(public))
    assert code == 1 and "error[BE763]" in err
