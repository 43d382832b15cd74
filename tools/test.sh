#!/usr/bin/env bash
# The full test suite (the README's test command): installs what it needs, then runs ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/env.sh "[test]"
.venv/bin/ruff check ganforge tests benchmarks tools
command -v chromium >/dev/null || command -v google-chrome >/dev/null || \
  echo "note: tests/test_report_browser.py skips without a headless browser; install one with: apt-get update && apt-get install -y chromium"
.venv/bin/python -m pytest -q -n 2 --dist worksteal "$@"  # worksteal: an idle worker takes queued tests (no long tail)
