#!/usr/bin/env bash
# One run over 2 processes started the way `srun` starts the tasks of a SLURM job (one node, two
# tasks), without a cluster: each process gets the variables SLURM would give it, and Lightning's
# SLURM detection sets up DDP from them (README "Scaling one run"). Tiny settings, ~1 minute.
#   bash scripts/ddp_slurm_local.sh [RUN_DIR] [train.py overrides ...]
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir="${1:-outputs/ddp-slurm-local}"
shift || true
pids=()
for rank in 0 1; do
  SLURM_JOB_ID=4242 SLURM_JOB_NAME=battle-rl SLURM_NODELIST=127.0.0.1 SLURM_NNODES=1 \
  SLURM_NTASKS=2 SLURM_NTASKS_PER_NODE=2 SLURM_NODEID=0 SLURM_PROCID=$rank SLURM_LOCALID=$rank \
    python train.py trainer=ddp env.max_cycles=20 trainer.max_steps=30 hparams.buffer_size=2000 \
      hparams.batch_size=32 hparams.warmup=64 eval.every_n_steps=10 eval.episodes=1 \
      eval.final_episodes=2 "eval.opponents=[random]" opponent=random \
      hydra.run.dir="$run_dir" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
