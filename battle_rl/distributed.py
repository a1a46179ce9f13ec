"""One run over several processes (Lightning's DDP): what each rank owns, what they share.

``python train.py trainer=ddp`` (two processes; ``trainer.devices=N`` for N, with
``trainer.num_nodes`` across nodes, ``trainer.accelerator=gpu`` on GPUs) runs one learner per
process (rank), started by Lightning's launcher, ``torchrun`` or SLURM's ``srun``:

- each rank plays its own games: its rollout stream (game seeds, exploration, the opponent's
  draws, replay sampling) is seeded with ``rank_seed(seed, rank)``, rank 0 keeping ``seed`` (it
  plays the games of a one-process run), and fills its own replay buffer;
- DDP averages the gradients of the ranks' batches, so every rank holds the same networks: an
  update learns from N batches, N times the data of a one-process update;
- decisions are common: ``callbacks.SyncStop`` ends every rank after the same update as soon as one rank
  asks (rank 0's evaluation or time budget, Ctrl-C / SIGTERM, a spent episode budget), so no
  rank waits for gradients that will never come; epsilon follows each rank's own cycles, which
  advance alike (``updates_per_cycle`` per update); self-play snapshots are taken on every rank
  at the same updates, of the same weights;
- rank 0 alone evaluates, exports ``policy.pt``, writes ``eval.json``, plots, snapshot files
  and videos; Lightning's loggers log from rank 0 only (one W&B run);
- checkpoints: rank 0 writes the file, with every rank's rollout state (counters, random
  states) gathered into it; each rank writes its own replay buffer beside it.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from battle_rl.errors import ConfigError


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s rollout stream: ``seed`` itself for rank 0, and for the
    others a number derived from (seed, rank) that no other pair gives in practice."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def own_stream(dataset, seed: int, trainer) -> None:
    """Give this rank its own games (call once the Trainer knows the ranks, before fit).

    The stream also stops ending itself: a rank whose episode budget is spent keeps playing
    until ``callbacks.SyncStop`` stops every rank after the same update."""
    if trainer.world_size > 1:
        dataset.reseed(rank_seed(seed, trainer.global_rank))
        dataset.endless = True


def gather(trainer, obj) -> list:
    """Every rank's ``obj``, in rank order (a collective: every rank must call it)."""
    if trainer.world_size == 1:
        return [obj]
    import torch

    out = [None] * trainer.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def weights_digest(state_dict: dict) -> str:
    """A fingerprint of a module's weights: ranks that hold the same networks give the same."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_launch(trainer) -> None:
    """Inside a Hydra multirun, Lightning's own launcher would re-run the whole sweep in each
    new process: there, the ranks must be started by SLURM (``hydra/launcher=slurm``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if trainer.world_size == 1 or not HydraConfig.initialized():
        return
    env = trainer.strategy.cluster_environment
    if HydraConfig.get().mode == RunMode.MULTIRUN and not env.creates_processes_externally:
        raise ConfigError("DDP in a multirun (-m) needs its processes started by SLURM "
                          "(hydra/launcher=slurm with tasks_per_node, see the README's "
                          "'Scaling one run'); a single run: drop -m")


def shared_run_dir(argv: list[str]) -> list[str]:
    """Processes started by ``torchrun`` or ``srun`` each run Hydra: without one given
    ``hydra.run.dir`` they could name their folders after different seconds."""
    n = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if n > 1 and not multirun and not any(a.startswith("hydra.run.dir=") for a in argv):
        raise ConfigError(f"{n} processes (torchrun / srun) share one run: give them its "
                          f"folder, hydra.run.dir=DIR")
    return argv
