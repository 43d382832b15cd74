#!/usr/bin/env bash
# The README's main job: a short Progressive GAN run on the built-in dataset (CPU, a few minutes), writing sample
# grids and checkpoints into runs/quickstart, then printing SWD of the trained generator against its data
# and the path of the run's HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/env.sh "[report]"   # the report extra (matplotlib) draws the report's curves
.venv/bin/ganforge train pgan -c configs/quickstart_pgan.yaml --run runs/quickstart --final-swd 2048 "$@"
