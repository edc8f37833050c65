#!/usr/bin/env bash
# The whole test suite: what README's test command and .ci/run run.
#
#   1. ruff check .               lint, rules/ included (pyproject.toml [tool.ruff] says which)
#   2. ./pants test ::            every pytest file under tests/ (unit, CLI end-to-end,
#                                 drift, promotion, images), cached by Pants
#   3. the Pants plugin's tests:  RuleRunner tests (own py3.9 venv) and integration tests that
#                                 drive the real ./pants in temporary repos (project venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_SCIE_WARNING=1

if [ ! -x .venv/bin/buildenv ]; then
  python3.11 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
.venv/bin/pip install -q -e '.[test,privacy,ray,signing,tables]'

.venv/bin/ruff check .
./pants test ::
tests/pants/run_rule_tests.sh -q
.venv/bin/python -m pytest tests/pants -q -p no:cacheprovider
