#!/usr/bin/env bash
# Creates (once) the project's virtual environment in .venv and installs ganforge into it.
# torch is pinned to the CPU build that works everywhere here; an unpinned torch would pull CUDA packages.
# Set GANFORGE_TORCH to install another torch spec (e.g. a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${GANFORGE_TORCH:-torch==2.13.0}
extras=${1:-}
stamp=".venv/.ganforge-installed$extras"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"
  if [[ "$extras" == *test* ]]; then
    # oracles the tests read, without their dependencies (both want torchvision): LPIPS heads are data files of the
    # lpips wheel (never imported); clean-fid's resize module needs only numpy, torch and PIL
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps lpips clean-fid==0.1.35
  fi
  echo "$want" > "$stamp"
fi
