#!/usr/bin/env bash
# Set up everything the test suite needs in ./.venv and run it. Extra arguments go to pytest.
#
#   bash scripts/test.sh                 # the whole suite
#   bash scripts/test.sh tests/unit -q   # a part of it
#   LINT=1 bash scripts/test.sh -q       # ruff check + ruff format --check first (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
# The CPU build of torch first: a looser requirement would pull several GB of CUDA packages.
pip install --quiet --disable-pip-version-check torch==2.13.0
pip install --quiet --disable-pip-version-check -e '.[dev]'
if [ -f scripts/install_tools.sh ]; then
    bash scripts/install_tools.sh   # helm, kubectl and kubernetes-validate for the chart tests
fi
if [ "${LINT:-0}" = 1 ]; then
    python -m ruff check .
    python -m ruff format --check .
fi
exec python -m pytest "$@"
