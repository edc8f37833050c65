#!/usr/bin/env bash
# The whole test suite: what README's test command and .ci/run run.
#
#   1. ruff check . and mypy      lint (rules/ included) and types of buildenv/
#                                 (pyproject.toml [tool.ruff], [tool.mypy] say which)
#   2. ./pants test ::            every pytest file under tests/ (unit, CLI end-to-end,
#                                 drift, promotion, images), cached by Pants; then the 20
#                                 slowest tests of the whole run (tests/slowest.py)
#   3. the Pants plugin's tests:  RuleRunner tests (own py3.9 venv) and integration tests that
#                                 drive the real ./pants in temporary repos (project venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_SCIE_WARNING=1

if [ ! -x .venv/bin/buildenv ]; then
  python3.11 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
.venv/bin/pip install -q -e '.[test,privacy,ray,signing,tables,models]'

.venv/bin/ruff check .
.venv/bin/mypy
rm -rf dist/test/reports  # JUnit reports of this run only ([test] report in pants.toml)
./pants test ::
.venv/bin/python tests/slowest.py dist/test/reports --top 20  # the suite's time budget
tests/pants/run_rule_tests.sh -q
.venv/bin/python -m pytest tests/pants -q -p no:cacheprovider --durations=20
