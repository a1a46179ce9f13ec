"""One run over two processes (Lightning's DDP over gloo, battle_rl/distributed.py): each rank
plays its own games, the ranks hold the same networks, rank 0 alone evaluates and exports, and
the run resumes, through Lightning's own launcher and through torchrun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import OPPONENTS, ROOT, TINY

# TINY on two processes, with evaluations during training and a final Table I of 2 games
DDP = (*[o for o in TINY if not o.startswith(("eval.", "trainer.max_steps"))],
       "trainer=ddp", "trainer.max_steps=30", "checkpoint_every=20", "eval.every_n_steps=10",
       "eval.episodes=1", "eval.final_episodes=2", "eval.opponents=[random]")
TABLE_HEADER = re.compile(r"^Opponent\s+Win\s+Draw\s+Lose", re.M)


def run(*args: str, timeout: float = 600, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """``python ARGS`` from the project root; on a timeout every process it started is
    killed too (a rank left alone would wait for the others)."""
    full_env = dict(os.environ, BATTLE_RL_OPPONENTS_DIR=str(OPPONENTS), **(env or {}))
    p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=full_env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def train(*overrides: str) -> subprocess.CompletedProcess:
    """Two processes started by Lightning's launcher (the run's ``trainer=ddp``)."""
    return run(str(ROOT / "train.py"), *overrides)


def torchrun(*overrides: str) -> subprocess.CompletedProcess:
    """Two processes started by torchrun."""
    return run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "train.py"), *overrides)


def ranks_of(ckpt_path) -> tuple[dict, list[dict]]:
    from battle_rl.distributed import weights_digest

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    ranks = ckpt["ranks"]
    assert len(ranks) == 2
    # the same networks on both ranks: those rank 0 wrote into the checkpoint
    assert ranks[0]["weights"] == ranks[1]["weights"] == weights_digest(ckpt["state_dict"])
    return ckpt, ranks


def test_two_processes_own_games_same_networks_one_export_and_resume(tmp_path):
    out = tmp_path / "run"
    r = train(*DDP, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    # once, on rank 0: the run's summary, Table I, eval.json, the evaluations during training
    lines = r.stdout.splitlines()
    assert sum(ln.startswith("run folder:") for ln in lines) == 1
    assert sum(ln.startswith("opponents:") for ln in lines) == 1
    assert len(TABLE_HEADER.findall(r.stdout)) == 1
    assert r.stdout.strip().splitlines()[-1] == str(out / "policy.pt")
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.pt")] == ["policy.pt"]
    assert json.loads((out / "eval.json").read_text())["random"]["episodes"] == 2
    history = [json.loads(ln) for ln in (out / "eval_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history][:3] == [10, 20, 30]  # (and the last weights' chance)

    ckpt, ranks = ranks_of(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 30
    # each rank its own games: other random streams, other transitions in its own buffer
    assert ranks[0]["rollout"]["rng"] != ranks[1]["rollout"]["rng"]
    with np.load(out / "checkpoints" / "replay.npz") as a, \
            np.load(out / "checkpoints" / "replay_rank1.npz") as b:
        sizes = [int(x["ready"][: int(x["size"])].sum()) for x in (a, b)]  # sampleable rows
        assert min(sizes) > 0 and not np.array_equal(a["obs"], b["obs"])
    # epsilon follows each rank's cycles, which advance alike
    assert ranks[0]["rollout"]["cycles"] == ranks[1]["rollout"]["cycles"]

    # resume, the processes started by torchrun: each rank its own stream and buffer
    r = torchrun(f"resume={out}", "trainer.max_steps=50")
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):  # the ranks share one stdout: their lines may run into each other
        m = re.search(rf"rank {rank}: resumed at step 30: epsilon [\d.]+, (\d+) transitions",
                      r.stdout)
        assert m and int(m.group(1)) == sizes[rank], r.stdout[-3000:]
    assert len(TABLE_HEADER.findall(r.stdout)) == 1
    assert r.stdout.strip().splitlines()[-1] == str(out / "policy.pt")
    ckpt, ranks = ranks_of(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 50
    assert ranks[0]["rollout"]["rng"] != ranks[1]["rollout"]["rng"]


@pytest.mark.parametrize("args,env,expected", [
    (["+trainer.strategy=ddp_spawn"], {}, "trainer.strategy='ddp_spawn' is not allowed"),
    # two processes started by torchrun / srun must be told their one folder
    ([], {"WORLD_SIZE": "2"}, "give them its folder, hydra.run.dir=DIR"),
])
def test_bad_launch_one_line(tmp_path, args, env, expected):
    r = run(str(ROOT / "train.py"), *args, env=env, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr


def test_rank_seeds_distinct_and_rank_zero_keeps_the_seed():
    from battle_rl.distributed import rank_seed

    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(s, r) for s in range(20) for r in range(8)}
    assert len(seeds) == 20 * 8


def test_slurm_launcher_config_for_one_run_over_nodes():
    """The README's multi-node command through Hydra's SLURM launcher composes (submitit)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
            "hydra.launcher.gpus_per_node=4", "trainer=ddp", "trainer.accelerator=gpu",
            "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    # one task per rank: tasks per node = processes per node
    assert (launcher.nodes, launcher.tasks_per_node) == (cfg.trainer.num_nodes, cfg.trainer.devices)
    assert cfg.trainer.strategy == "ddp"
