"""Everything users can type or read is documented: codes (`buildenv explain`) and commands."""

from __future__ import annotations

import re

import pytest
import typer.main
from conftest import REPO_ROOT, invoke_cli

from buildenv.cli import app
from buildenv.core.codes import CODES

SOURCES = sorted((REPO_ROOT / "buildenv").rglob("*.py"))
USED = sorted({code for path in SOURCES
               for code in re.findall(r"\bBE\d{3}\b", path.read_text(encoding="utf-8"))})


def _commands() -> dict:
    """name -> click command (typer vendors its own click, so no isinstance checks)."""
    return dict(typer.main.get_command(app).commands)


COMMANDS = sorted(_commands())


def test_sources_use_codes():
    assert len(SOURCES) > 10 and len(USED) > 30


@pytest.mark.parametrize("code", USED)
def test_every_used_code_is_documented(code):
    assert code in CODES, f"{code} is used in buildenv/ but has no entry in codes.CODES"
    entry = CODES[code]
    assert entry.title.strip() and entry.explanation.strip()
    assert len(entry.explanation) >= 30, "an explanation says what happened and what to do"


def test_codes_are_well_formed():
    assert all(re.fullmatch(r"BE\d{3}", code) for code in CODES)
    assert list(CODES) == sorted(CODES), "keep codes.CODES sorted"
    titles = [c.title for c in CODES.values()]
    assert all(t == t.strip() and not t.endswith(".") and len(t) <= 40 for t in titles)


@pytest.mark.parametrize("code", sorted(CODES))
def test_explain_every_code(code):
    code_, out, err = invoke_cli(["explain", code], REPO_ROOT)
    assert (code_, err) == (0, "")
    assert out == f"{code}: {CODES[code].title}\n\n{CODES[code].explanation}\n"


def test_explain_is_case_insensitive():
    assert invoke_cli(["explain", "be102"], REPO_ROOT) == invoke_cli(["explain", "BE102"],
                                                                      REPO_ROOT)


def test_explain_unknown_code():
    code, out, err = invoke_cli(["explain", "BE1022"], REPO_ROOT)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["buildenv: error[BE004]: unknown code 'BE1022'",
                                "  hint: did you mean 'BE102'?"]


def test_spec_commands_exist():
    spec_commands = {"envs", "show", "diff", "lock", "validate", "check", "build", "schema",
                     "explain"}
    assert spec_commands <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    command = _commands()[name]
    assert command.help and command.help.strip(), f"`buildenv {name}` has no help text"
    assert command.get_short_help_str().strip()
    code, out, err = invoke_cli([name, "--help"], REPO_ROOT)
    assert code == 0, err
    assert f"Usage: buildenv {name}" in out
    assert command.help.strip().splitlines()[0][:30] in " ".join(out.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_argument_is_described(name):
    """Positional arguments have help (options are covered by their names and defaults)."""
    for param in _commands()[name].params:
        if param.param_type_name == "argument":
            assert getattr(param, "help", None), f"`buildenv {name}` argument {param.name}"


# --- the reference in docs/ -------------------------------------------------------------------
#
# The docs are the project's own reference and live in the repository: no link may leave it.
# Conventions these tests rely on (docs/README.md states them for writers): every command has a
# heading naming it (`buildenv NAME`), every key of the environment format appears as its full
# path in a code span (`datasets.<dataset>.columns.<column>.dtype`; `<...>` stands for one name),
# every code appears somewhere, and docs/diagnostics.md holds the code list generated from CODES.

DOCS = REPO_ROOT / "docs"
DOC_PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN_FILES = [REPO_ROOT / p for p in ("README.md", "CHANGELOG.md", "examples/README.md",
                                          "rules/README.md", "bench/README.md",
                                          "data/README.md")] + DOC_PAGES

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
_HTML_LINK = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_BARE_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)  # what GitHub autolinks
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def _without_code(text: str) -> str:
    """Markdown without fenced blocks and code spans: what can hold a link."""
    return _CODE_SPAN.sub(" ", _FENCE.sub(" ", text))


def _links(text: str) -> list[str]:
    prose = _without_code(text)
    found = [m.group(1) for pattern in (_INLINE_LINK, _REFERENCE, _HTML_LINK)
             for m in pattern.finditer(prose)]
    bare = _INLINE_LINK.sub(" ", _REFERENCE.sub(" ", prose))
    return found + [m.group(0) for m in _BARE_URL.finditer(bare)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: formatting dropped, lower case, punctuation removed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for match in _HEADING.finditer(_FENCE.sub(" ", text)):
        slug = _slug(match.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def link_problems(path, text: str, root=REPO_ROOT) -> list[str]:
    """Every link of a Markdown file that leaves the repository or points at nothing."""
    root = root.resolve()
    problems = []
    if "../shared" in text:
        problems.append("mentions ../shared, which is outside the repository")
    for target in _links(text):
        if not target:
            problems.append("empty link target")
            continue
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            problems.append(f"{target}: a URL leaves the repository (link a page in docs/)")
            continue
        if target.startswith(("/", "\\", "~")):
            problems.append(f"{target}: an absolute path is not in a clone of the repository")
            continue
        file_part, _, anchor = target.partition("#")
        if ".." in file_part.replace("\\", "/").split("/"):
            # it may still land inside, but readers and tools that resolve from the
            # repository's root see it leave: name the file as a `path` instead
            problems.append(f"{target}: climbs out of its directory (`..`)")
            continue
        if not file_part:  # a heading of this page
            if anchor not in _anchors(text):
                problems.append(f"{target}: no heading with anchor #{anchor}")
            continue
        resolved = (path.parent / file_part).resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: resolves outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file in the repository")
            continue
        if (anchor and resolved.suffix == ".md" and resolved.is_file()
                and anchor not in _anchors(resolved.read_text(encoding="utf-8"))):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    return problems


def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOC_PAGES)


def test_the_reference_pages_exist():
    names = {p.relative_to(DOCS).as_posix() for p in DOC_PAGES}
    assert {"README.md", "environment.md", "commands.md", "diagnostics.md", "artifact.md",
            "training.md", "data.md", "production.md"} <= names


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_link_leaves_the_repository(path):
    assert path.is_file(), f"{path} is missing (under Pants: list it in BUILD's files(name='docs'))"
    problems = link_problems(path, path.read_text(encoding="utf-8"))
    assert not problems, f"{path.relative_to(REPO_ROOT)}:\n  " + "\n  ".join(problems)


def test_link_checker_catches_links_that_leave(tmp_path):
    """The checker itself: each kind of escape is caught; links inside code are not links."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A title\n")
    page = tmp_path / "docs" / "b.md"
    bad = {
        "[spec](../shared/SPEC.md)": "../shared",
        "[spec](../../shared/SPEC.md)": "climbs out",
        "[up](../README.md)": "climbs out",
        "[abs](/work/shared/SPEC.md)": "absolute path",
        "[web](https://example.com/docs)": "URL",
        "see https://example.com/docs": "URL",
        "[ref]: ../../elsewhere.md": "climbs out",
        "[gone](missing.md)": "no such file",
        "[anchor](a.md#no-such-heading)": "no heading",
        "<a href=\"file:///etc/passwd\">x</a>": "URL",
    }
    for line, expected in bad.items():
        found = link_problems(page, line + "\n", root=tmp_path)
        assert any(expected in p for p in found), (line, found)
    good = ("[a](a.md) [t](a.md#a-title) [self](#b) `[x](https://e.com)`\n"
            "```\n[y](../../outside.md) https://e.com\n```\n# B\n")
    assert link_problems(page, good, root=tmp_path) == []


def test_every_docs_page_is_in_the_index():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in _links(index)}
    missing = [p.relative_to(DOCS).as_posix() for p in DOC_PAGES
               if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link {missing}"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/README.md" in _links(readme)


# Commands: every command has a heading naming it, every flag appears somewhere.

def _headings(text: str) -> list[str]:
    return [m.group(2).replace("`", "") for m in _HEADING.finditer(_FENCE.sub(" ", text))]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_documented(name):
    headings = [h for p in DOC_PAGES for h in _headings(p.read_text(encoding="utf-8"))]
    pattern = re.compile(rf"\bbuildenv {re.escape(name)}(?![\w-])")
    assert any(pattern.search(h) for h in headings), \
        f"no heading in docs/ names `buildenv {name}` (commands.md has one per command)"


_TABLE_COMMAND = re.compile(r"^\| \[`buildenv ([a-z-]+)`\]\(([^)]*)\) \| (.+) \|$", re.M)


def test_the_commands_table_lists_every_command():
    """commands.md opens with one row per command, linking its section (here or on the page
    that documents it)."""
    rows = _TABLE_COMMAND.findall((DOCS / "commands.md").read_text(encoding="utf-8"))
    listed = [name for name, _, _ in rows]
    assert sorted(listed) == COMMANDS, (
        f"missing from docs/commands.md's table: {sorted(set(COMMANDS) - set(listed))}; "
        f"not commands: {sorted(set(listed) - set(COMMANDS))}")
    assert len(set(listed)) == len(listed)
    for name, target, does in rows:
        assert f"buildenv-{name}" in target, (name, target)
        assert does.strip(), name


@pytest.mark.parametrize("name", COMMANDS)
def test_every_flag_is_documented(name):
    text = _docs_text()
    flags = sorted({opt for param in _commands()[name].params if param.param_type_name == "option"
                    for opt in [*param.opts, *param.secondary_opts]
                    if opt.startswith("--") and opt != "--help"})
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"`buildenv {name}` flags not in docs/: {missing}"


# a synopsis, continued on indented lines
_SYNOPSIS_FORMAT = re.compile(r"^ *buildenv ([a-z-]+) (?:[^\n]|\n {4,})*?\[--format ([a-z|]+)\]",
                              re.M)


def test_every_documented_format_is_accepted():
    """A synopsis's `[--format a|b]` lists values its command takes (`tasks` documented
    `text|json` while it took `yaml|json`)."""
    wrong = []
    for path in [*DOC_PAGES, REPO_ROOT / "README.md"]:
        for name, values in _SYNOPSIS_FORMAT.findall(path.read_text(encoding="utf-8")):
            option = next(p for p in _commands()[name].params if "--format" in p.opts)
            choices = {getattr(c, "value", c) for c in option.type_descriptor.choices or ()}
            if choices:  # a free string (`card --format md|json`) is checked by its command
                wrong += [(path.name, name, v) for v in values.split("|") if v not in choices]
    assert not wrong, wrong


# README's layout: every room and every module of the package, and nothing that is gone.

_LAYOUT_ENTRY = re.compile(r"^( *)([a-z_]+)/ +(.*)$")


def readme_layout(text: str) -> dict[str, str]:
    """Package path under buildenv/ -> the words README's layout block gives it."""
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    stack: list[str] = []
    current = None
    for line in block.splitlines():
        match = _LAYOUT_ENTRY.match(line)
        if match and len(match.group(1)) % 2 == 0:
            depth = len(match.group(1)) // 2
            stack = stack[:depth] + [match.group(2)]
            current = "/".join(stack)
            entries[current] = match.group(3)
        elif current is not None and line.startswith(" "):
            entries[current] += " " + line.strip()
    return {path: words for path, words in entries.items() if path.startswith("buildenv")}


def test_the_readme_layout_names_every_room_and_module():
    layout = readme_layout((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    package = REPO_ROOT / "buildenv"
    rooms = {p.parent.relative_to(REPO_ROOT).as_posix() for p in package.rglob("__init__.py")}
    assert set(layout) == rooms, (f"README's layout lacks {sorted(rooms - set(layout))}; "
                                  f"names rooms that are gone: {sorted(set(layout) - rooms)}")
    missing = []
    for room in sorted(rooms - {"buildenv"}):
        words = set(re.findall(r"[a-z_]+", layout[room]))
        missing += [f"{room}/{p.stem}" for p in sorted((REPO_ROOT / room).glob("*.py"))
                    if p.stem != "__init__" and p.stem not in words]
    assert not missing, f"README's layout does not name {missing}"


def test_the_layout_check_reads_nested_rooms():
    text = ("## Layout\n\n```\nbuildenv/  top\n  data/  storage\n    lock/  digests,\n"
            "                manifest\n  cli/  app\nrules/  plugin\n```\n")
    assert readme_layout(text) == {"buildenv": "top", "buildenv/data": "storage",
                                   "buildenv/data/lock": "digests, manifest",
                                   "buildenv/cli": "app"}


# Codes: every code appears in docs/, and docs/diagnostics.md's list is generated from CODES.

@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_is_documented(code):
    assert re.search(rf"\b{code}\b", _docs_text()), f"{code} appears nowhere in docs/"


CODE_GROUPS = [  # (first, last, title): the ranges of codes.py
    (0, 49, "environment and project files"), (50, 99, "locks and the data gate"),
    (100, 199, "static checks of training code"), (200, 299, "data validation"),
    (300, 399, "training"), (400, 499, "verification against the serving stack"),
    (500, 599, "evaluation: slices, label coverage, model cards"),
    (600, 699, "drift"), (700, 749, "promotion and retraining"), (750, 799, "serving images"),
    (800, 899, "the audit log"), (900, 999, "importers (buildenv import)"),
]
BEGIN_CODES = ("<!-- BEGIN CODES: generated from buildenv/core/codes.py by "
               "`python tests/test_docs.py --write`; do not edit by hand -->")
END_CODES = "<!-- END CODES -->"


def _cell(text: str) -> str:
    """Plain text for a table cell: `<name>`, `*` and `|` outside code spans kept literal."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else
                   part.replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
                   .replace("|", "\\|") for part in parts)


def codes_markdown() -> str:
    """The list of codes, grouped by range, as docs/diagnostics.md shows it."""
    groups: dict[str, list[str]] = {}
    for code in sorted(CODES):
        n = int(code[2:])
        group = next((f"BE{lo:03d}–BE{hi:03d}: {title}" for lo, hi, title in CODE_GROUPS
                      if lo <= n <= hi), "other codes")
        groups.setdefault(group, []).append(code)
    lines = [BEGIN_CODES, "", "| range | stage |", "| --- | --- |"]
    lines += [f"| `BE{lo:03d}`–`BE{hi:03d}` | {title} |" for lo, hi, title in CODE_GROUPS]
    for group, codes in groups.items():
        lines += ["", f"### {group}", "", "| code | title | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{c}` | {_cell(CODES[c].title)} | {_cell(CODES[c].explanation)} |"
                  for c in codes]
    return "\n".join(lines + ["", END_CODES])


def _with_codes(page: str) -> str:
    start, end = page.index(BEGIN_CODES), page.index(END_CODES) + len(END_CODES)
    return page[:start] + codes_markdown() + page[end:]


def test_the_code_list_is_generated_from_codes():
    page = (DOCS / "diagnostics.md").read_text(encoding="utf-8")
    assert BEGIN_CODES in page and END_CODES in page
    assert page == _with_codes(page), ("docs/diagnostics.md's code list is out of date with "
                                       "buildenv/core/codes.py: run `python tests/test_docs.py "
                                       "--write`")


# The environment format: every property path of the schema is in docs/, with its default.

def schema_paths() -> dict[tuple, list]:
    """Property path (mapping entries and list items as '*') -> the defaults the schema gives."""
    from buildenv.env.spec import json_schema

    schema = json_schema()
    defs = schema.get("$defs", {})
    out: dict[tuple, list] = {}

    def walk(node: dict, path: tuple) -> None:
        if "$ref" in node:
            walk(defs[node["$ref"].rsplit("/", 1)[-1]], path)
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for sub in node.get(key, []):
                walk(sub, path)
        for name, sub in node.get("properties", {}).items():
            out.setdefault(path + (name,), [])
            if "default" in sub:
                out[path + (name,)].append(sub["default"])
            walk(sub, path + (name,))
        for key in ("additionalProperties", "items"):
            if isinstance(node.get(key), dict):
                walk(node[key], path + ("*",))

    walk(schema, ())
    return out


SCHEMA_PATHS = schema_paths()
_PATH = re.compile(r"(?:[A-Za-z_]\w*|<[^<>.\s]+>)(?:\.(?:[A-Za-z_]\w*|<[^<>.\s]+>))*")


def _documented(span: str) -> tuple | None:
    """A code span that writes a key path (its last part a key, not a `<name>`), as a pattern."""
    span = span.strip()
    if not _PATH.fullmatch(span) or span.endswith(">"):
        return None
    return tuple(span.split("."))


def _matches(pattern: tuple, path: tuple) -> bool:
    return len(pattern) == len(path) and all(
        p.startswith("<") or p == q for p, q in zip(pattern, path))


def _documented_paths(text: str) -> set[tuple]:
    spans = (m.group(2) for m in _CODE_SPAN.finditer(_FENCE.sub(" ", text)))
    return {p for p in map(_documented, spans) if p}


def test_schema_paths_are_found():
    """The walk finds nested keys (datasets -> columns -> dtype), unions (serving) and defs."""
    assert {("datasets", "*", "columns", "*", "dtype"), ("serving", "opset"), ("serving", "ops"),
            ("monitoring", "drift", "columns", "*", "psi"), ("evaluation", "join")} \
        <= set(SCHEMA_PATHS)


@pytest.mark.parametrize("path", sorted(SCHEMA_PATHS), ids=".".join)
def test_every_environment_key_is_documented(path):
    documented = _documented_paths(_docs_text())
    assert any(_matches(p, path) for p in documented), (
        f"`{'.'.join(path).replace('*', '<name>')}` appears in no code span in docs/ "
        "(write its full path, e.g. in the key column of environment.md's tables)")


def _default_shown(default, spans: set[str]) -> bool:
    if isinstance(default, bool):
        return ("true" if default else "false") in spans
    if isinstance(default, (int, float)):
        return any(re.fullmatch(r"-?\d+(\.\d+)?", s) and float(s) == default for s in spans)
    return default in spans


def test_documented_defaults_match_the_format():
    """A table row documenting a key with a scalar default shows that default in a code span."""
    rows = [line for p in DOC_PAGES for line in _FENCE.sub(" ", p.read_text(encoding="utf-8"))
            .splitlines() if line.lstrip().startswith("|")]
    checked, wrong = 0, []
    for row in rows:
        cells = row.strip().strip("|").split("|")
        spans = {m.group(2).strip() for m in _CODE_SPAN.finditer(row)}
        keys = {p for p in map(_documented, (m.group(2) for m in _CODE_SPAN.finditer(cells[0])))
                if p}
        for path, defaults in SCHEMA_PATHS.items():
            if not any(_matches(k, path) for k in keys):
                continue
            for default in defaults:
                if isinstance(default, (bool, int, float, str)):
                    checked += 1
                    if not _default_shown(default, spans):
                        wrong.append(f"{'.'.join(path)}: default {default!r} not in: {row}")
    assert checked >= 6 and not wrong, wrong


if __name__ == "__main__":  # `python tests/test_docs.py --write`: regenerate the code list
    import sys

    target = DOCS / "diagnostics.md"
    current = target.read_text(encoding="utf-8")
    if sys.argv[1:] == ["--write"]:
        target.write_text(_with_codes(current), encoding="utf-8")
    else:
        sys.exit("usage: python tests/test_docs.py --write")
