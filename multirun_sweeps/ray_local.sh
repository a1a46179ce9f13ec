#!/usr/bin/env bash
# The joint grid (2 x 2 x 2 = 8 configurations, one seed: 8 jobs, tiny budget) through the Ray
# launcher on a local Ray instance, then its offline report (written again: the sweep wrote it
# as it ended). Needs the Ray extra: pip install -e ".[ray]".
#   bash multirun_sweeps/ray_local.sh seeds=3                   # 3 seeds each (24 jobs)
#   bash multirun_sweeps/ray_local.sh                         # 2 jobs at a time (2 CPUs)
#   bash multirun_sweeps/ray_local.sh hydra.launcher.ray.init.num_cpus=8   # more at once
# Extra arguments are Hydra overrides; drop +budget=tiny below for a real sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0
dir="multirun/grid-ray/$(date +%Y-%m-%d_%H-%M-%S)"
start=$(date +%s)
python train.py -m +sweep=grid +budget=tiny seeds=1 hydra/launcher=ray_local "hydra.sweep.dir=$dir" "$@"
echo "sweep finished in $(( $(date +%s) - start )) s: $dir"
python -m battle_rl.outputs.report "$dir"
