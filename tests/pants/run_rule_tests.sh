#!/usr/bin/env bash
# Run the plugin's RuleRunner tests (tests/pants/rules/) under Python 3.9.
#
# pantsbuild.pants.testutil==2.17.1 pins pytest 7.0.1 and needs the Python 3.9 Pants runs
# on, so these tests have their own venv (cached in ~/.cache/buildenv-pants-testutil)
# instead of the project's Python 3.11 resolve. Extra arguments go to pytest.
#
#   BUILDENV_PANTS_PYTHON  a CPython 3.9 (default: pyenv's 3.9.x, then python3.9)
set -euo pipefail

readonly PANTS_VERSION="2.17.1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/buildenv-pants-testutil"
venv="$cache/pants-${PANTS_VERSION}-py39"

find_python39() {
  local candidate
  for candidate in "${BUILDENV_PANTS_PYTHON:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9.*/bin/python3.9 \
      "$(command -v python3.9 || true)"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null \
      && { echo "$candidate"; return; }
  done
  echo "run_rule_tests: no CPython 3.9 found; set BUILDENV_PANTS_PYTHON" >&2
  exit 1
}

if [[ ! -f "$venv/.complete" ]]; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -f "$venv/.complete" ]]; then
    rm -rf "$venv"
    "$(find_python39)" -m venv "$venv"
    # The machine's pip configuration (extra indexes, constraints) stays out.
    PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install --quiet \
      "pantsbuild.pants==${PANTS_VERSION}" "pantsbuild.pants.testutil==${PANTS_VERSION}" >&2
    touch "$venv/.complete"
  fi
  exec 9>&-
fi

cd "$root"
export PYTHONPATH="$root/rules${PYTHONPATH:+:$PYTHONPATH}" NO_SCIE_WARNING=1
report="$(mktemp -d)"
trap 'rm -rf "$report"' EXIT
# -c /dev/null --noconftest: the options and conftest.py of tests/ are for the Python 3.11
# suite (pytest 9).
status=0
"$venv/bin/python" -m pytest -c /dev/null --rootdir "$root" --noconftest -p no:cacheprovider -q \
  --junitxml "$report/rules.xml" tests/pants/rules "$@" || status=$?
# A test that skips here did not run: the modules skip themselves without pants.testutil,
# which this venv exists to provide. Say so, and fail.
"$venv/bin/python" - "$report/rules.xml" <<'PY' || status=1
import sys
import xml.etree.ElementTree as ET

suites = list(ET.parse(sys.argv[1]).getroot().iter("testsuite"))
ran = sum(int(s.get("tests", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
if not ran:
    sys.exit("run_rule_tests: no plugin rule test ran")
if skipped:
    sys.exit(f"run_rule_tests: {skipped} of {ran} plugin rule tests were skipped, so they did "
             "not run (is pants.testutil importable in the test venv?)")
print(f"run_rule_tests: {ran} plugin rule tests ran")
PY
exit "$status"
