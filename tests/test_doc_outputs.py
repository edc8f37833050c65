"""Every command output shown in the docs is real: each transcript is run and compared.

A *transcript* is a fenced block with the info string `console`: lines starting with `$ ` are
commands (`buildenv ...`, optionally after `NAME=value` variables), the lines after each
command are its output as a terminal shows it (stdout and stderr, in the order written); an
output whose last line is `...` is the beginning of the output. The transcripts of one page run
in order, in one fresh copy of the example multiverse (the page is one session: a build shown
early is there for a `promote` shown later). A fenced block right after `<!-- file: PATH -->`
is written to PATH in that copy before the page's transcripts run (an input file the page
shows, e.g. a suite to import); one right after `<!-- written: PATH -->` is what PATH holds
at that point of the session (a file a command shown before it wrote). A page with the comment
`<!-- session: empty -->` runs in an empty directory instead of the multiverse (a first
project), and a transcript line `$ cd DIR` moves the session into DIR.

Outputs are compared after normalising what changes from run to run: timestamps, durations,
MLflow run ids, the OS user name, the path of the copy; with `console noisy` every number is
normalised too (differentially private releases are random by design). Any other difference
fails the page.

    BUILDENV_UPDATE_DOCS=1 pytest tests/test_doc_outputs.py

rewrites the transcripts with what the commands print now (keeping each line that only
differs in normalised parts, so the diff shows real changes); review it, then commit.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "examples" / "README.md",
         *sorted((REPO_ROOT / "docs").glob("*.md"))]
UPDATE = bool(os.environ.get("BUILDENV_UPDATE_DOCS"))
DOC_USER = "root"  # the OS user the docs show (audit log); the real one is mapped to it
DOC_ROOT = "/home/you/work"  # where the docs' session runs; the real directory is mapped to it

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n"
                    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S)
_FILE = re.compile(r"<!--\s*(file|written):\s*(\S+)\s*-->\s*\n\s*$")
_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\b\d+(\.\d+)? s\b"), "<seconds>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<run id>"),
    (re.compile(r"\bpid \d+|process \d+"), "<process>"),
    (re.compile(r'"(seconds|wait|check|validate|train|importance|verify|onnx|save|register)": '
                r"\d+(\.\d+)?"), r'"\1": <seconds>'),
    (re.compile(r"^  \S+ @ \S+: <seconds> \(.*\)$"), "  <one of the slowest pairs>"),
]
# a comma only as a thousands separator: "[37, 38.1]" (an interval whose bound printed whole)
# is two numbers, not "37," and one
_NUMBER = re.compile(r"-?\d+(,\d{3})*(\.\d+)?(e[+-]?\d+)?")


@dataclass
class Transcript:
    start: int  # offset of the body in the page
    end: int
    options: set[str]
    indent: str  # of the fence (a transcript in a list item)
    steps: list[tuple[str, list[str]]] = field(default_factory=list)  # (command, output)
    written: str | None = None  # a `written:` block: the path whose content the body shows
    content: str = ""


def transcripts(text: str) -> tuple[list[Transcript], list[tuple[str, str]]]:
    """The page's transcripts and `written:` blocks, in order, and the files (path, content)
    it shows to be written first."""
    found, files = [], []
    for match in _FENCE.finditer(text):
        info = match.group("info").split()
        body = _dedent(match.group("body"), match.group("indent"))
        before = text[:match.start()]
        item = Transcript(match.start("body"), match.end("body"), set(info[1:]),
                          match.group("indent"))
        if (marker := _FILE.search(before[-300:])) is not None:
            if marker.group(1) == "file":
                files.append((marker.group(2), body))
            else:
                item.written, item.content = marker.group(2), body
                found.append(item)
            continue
        if not info or info[0] != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                item.steps.append((line[2:], []))
            elif item.steps:
                item.steps[-1][1].append(line)
        found.append(item)
    return found, files


def _dedent(body: str, indent: str) -> str:
    return "".join(line[len(indent):] if line.startswith(indent) else line
                   for line in body.splitlines(keepends=True))


def normalise(lines: list[str], root: Path, noisy: bool) -> list[str]:
    out = []
    for line in lines:
        line = line.replace(str(root), "<root>").rstrip()
        for pattern, token in _VOLATILE:
            line = pattern.sub(token, line)
        if noisy:
            line = _NUMBER.sub("<n>", line)
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def sandbox(tmp: Path) -> Path:
    """A copy of the example multiverse, without state."""
    root = tmp / "multiverse"
    root.mkdir()
    for name in ("environments", "data", "examples"):
        shutil.copytree(REPO_ROOT / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".buildenv"))
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def run(command: str, root: Path, cwd: Path) -> list[str]:
    words = shlex.split(command)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BUILDENV_", "RAY_", "MLFLOW_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", BUILDENV_PROGRESS="off",
               TZ="UTC", COLUMNS="100", BUILDENV_ACTOR="alice")
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words and words[0] == "buildenv", f"a transcript runs buildenv, not: {command}"
    proc = subprocess.run([sys.executable, "-m", "buildenv", *words[1:]], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1800)
    text = proc.stdout.replace(str(root.resolve()), DOC_ROOT).replace(str(root), DOC_ROOT)
    return re.sub(rf"\b{re.escape(_os_user())}\b", DOC_USER, text).splitlines()


def _os_user() -> str:
    from buildenv.core.actor import os_user

    return os_user()


def compared(shown: list[str], actual: list[str]) -> tuple[list[str], list[str], bool]:
    """(shown, actual) as compared: a shown output ending in `...` is a beginning, compared
    with as many lines of the actual output."""
    if shown and shown[-1].strip() == "...":
        return shown[:-1], actual[:len(shown) - 1], True
    return shown, actual, False


def _kept(shown: list[str], actual: list[str], root: Path, noisy: bool) -> list[str]:
    """The new output, keeping a shown line wherever it normalises to the same (and a `...`
    beginning a beginning)."""
    shown, actual, cut = compared(shown, actual)
    a, b = normalise(shown, root, noisy), normalise(actual, root, noisy)
    out = []
    for i, line in enumerate(actual):
        same = i < len(shown) and i < len(a) and i < len(b) and a[i] == b[i]
        out.append(shown[i] if same else line.rstrip())
    while out and not out[-1]:
        out.pop()
    return out + (["..."] if cut else [])


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if transcripts(p.read_text())[0]],
                         ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_transcripts_are_what_the_commands_print(page, tmp_path):
    text = page.read_text(encoding="utf-8")
    found, files = transcripts(text)
    root = tmp_path / "session" if "<!-- session: empty -->" in text else sandbox(tmp_path)
    root.mkdir(exist_ok=True)
    cwd = root
    for rel, content in files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    problems, rewritten, results = [], text, []
    for item in found:
        noisy = "noisy" in item.options
        body = []
        if item.written is not None:
            target = root / item.written
            actual = target.read_text(encoding="utf-8").splitlines() if target.is_file() \
                else [f"(no file {item.written})"]
            if item.content.splitlines() != actual:
                problems.append(f"{item.written}\n--- shown\n{item.content}+++ written\n"
                                + "\n".join(actual))
            results.append((item, actual))
            continue
        for command, shown in item.steps:
            if command.startswith("cd "):
                cwd = (cwd / command[3:].strip()).resolve()
                body.append(f"$ {command}")
                continue
            actual = run(command, root, cwd)
            left, right, _ = compared(shown, actual)
            if normalise(left, root, noisy) != normalise(right, root, noisy):
                problems.append(f"$ {command}\n--- shown\n" + "\n".join(shown)
                                + "\n+++ printed\n" + "\n".join(actual))
            body += [f"$ {command}", *_kept(shown, actual, root, noisy)]
        results.append((item, body))
    for item, body in reversed(results):  # from the end: earlier offsets stay valid
        lines = [(item.indent + b) if b else b for b in body]
        rewritten = rewritten[:item.start] + "\n".join(lines) + "\n" + rewritten[item.end:]
    if UPDATE and rewritten != text:
        page.write_text(rewritten, encoding="utf-8")
        return
    assert not problems, (f"{page.relative_to(REPO_ROOT)}: output differs from what the docs "
                          "show (BUILDENV_UPDATE_DOCS=1 rewrites them):\n\n"
                          + "\n\n".join(problems))


def test_every_prompt_is_in_a_transcript():
    """A block that shows `$ buildenv ...` is run: it must be a `console` block."""
    bad = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            info = match.group("info").split()
            if any(line.lstrip().startswith("$ ") for line in match.group("body").splitlines()) \
                    and (not info or info[0] != "console"):
                line = text[:match.start()].count("\n") + 1
                bad.append(f"{page.relative_to(REPO_ROOT)}:{line}")
    assert not bad, f"blocks with `$ ` prompts that are not ```console transcripts: {bad}"


def test_the_harness_normalises_only_what_varies(tmp_path):
    root = tmp_path
    shown = ["built in 12.3 s at 2026-12-01T15:10:34Z", f"{root}/dist run 0123456789abcdef"
             "0123456789abcdef", "62,559 rows"]
    assert normalise(shown, root, False) == ["built in <seconds> at <time>",
                                             "<root>/dist run <run id>", "62,559 rows"]
    assert normalise(["mean 41.2 (±0.3)"], root, True) == ["mean <n> (±<n>)"]
    # noise printed one bound whole: still two numbers (CI saw "[37, 38.146]" differ)
    assert normalise(["mean 37.5 [37, 38.146]", "rows 7,012 ± 24"], root, True) == normalise(
        ["mean 37.551 [36.985, 38.129]", "rows 12 ± 24"], root, True)
    page = ("intro\n\n<!-- file: a/b.json -->\n```json\n{}\n```\n\n```console\n$ buildenv "
            "version\n0.1.0\n$ X=1 buildenv envs\nNAME\n```\n\n```console noisy\n$ buildenv "
            "x\n```\n\n<!-- written: c.yaml -->\n```yaml\nname: c\n```\n")
    found, files = transcripts(page)
    assert files == [("a/b.json", "{}\n")]
    assert [(t.options, t.steps, t.written) for t in found] == [
        (set(), [("buildenv version", ["0.1.0"]), ("X=1 buildenv envs", ["NAME"])], None),
        ({"noisy"}, [("buildenv x", [])], None), (set(), [], "c.yaml")]
    assert compared(["a", "..."], ["a", "b", "c"]) == (["a"], ["a"], True)
    assert _kept(["a", "..."], ["a", "b"], root, False) == ["a", "..."]
