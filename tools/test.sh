#!/usr/bin/env bash
# The full test suite (the README's test command): installs what it needs, then runs ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/env.sh "[test]"
.venv/bin/ruff check ganforge tests benchmarks tools
.venv/bin/python -m pytest -q -n 2 "$@"
