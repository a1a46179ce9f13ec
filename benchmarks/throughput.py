"""Throughput: the game's floor cost, batched rollouts, learner updates, replay bytes.

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.json

1. ``parallel_env`` with random actions through its dict API (the floor cost), and battle-rl's
   ``BattleEnv`` (same game, engine arrays) with random actions;
2. rollouts with one batched greedy forward per team per cycle (both teams the seed network,
   no learning), as a ratio to (1);
3. learner: gradient updates/s (Huber loss, backward, clipping, AdamW, soft update) at batch
   128 and at the default batch;
4. replay storage: bytes per stored transition.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import compose, save


def env_random_dict_api(cycles: int, seed: int = 0) -> float:
    from magent2.environments import battle_v4

    env = battle_v4.parallel_env(map_size=45, max_cycles=300)
    rng = np.random.default_rng(seed)
    steps, done_cycles = 0, 0
    t0 = time.perf_counter()
    while done_cycles < cycles:
        env.reset(seed=seed + done_cycles)
        while env.agents and done_cycles < cycles:
            actions = dict(zip(env.agents, rng.integers(0, 21, len(env.agents)).tolist()))
            env.step(actions)
            steps += len(actions)
            done_cycles += 1
    return steps / (time.perf_counter() - t0)


def battle_env_rate(cycles: int, policy=None, seed: int = 0) -> float:
    """agent-steps/s of BattleEnv; ``policy`` None = random actions, else a greedy net per team."""
    from battle_rl.env import TEAMS, BattleEnv
    from battle_rl.networks import greedy_actions

    env = BattleEnv(max_cycles=300)
    rng = np.random.default_rng(seed)
    steps, done_cycles = 0, 0
    t0 = time.perf_counter()
    while done_cycles < cycles:
        obs = env.reset(seed=seed + done_cycles)
        while done_cycles < cycles:
            alive = env.alive
            if policy is None:
                actions = {t: rng.integers(0, 21, 81) for t in TEAMS}
            elif policy["red"] is policy["blue"]:  # one network for both: one forward of 162
                both = greedy_actions(policy["red"], np.concatenate([obs["red"], obs["blue"]]),
                                      np.concatenate([alive["red"], alive["blue"]]))
                actions = {"red": both[:81], "blue": both[81:]}
            else:
                actions = {t: greedy_actions(policy[t], obs[t], alive[t]) for t in TEAMS}
            step = env.step(actions)
            steps += int(alive["red"].sum() + alive["blue"].sum())
            done_cycles += 1
            obs = step.obs
            if step.done:
                break
    return steps / (time.perf_counter() - t0)


def evaluator_rate(policy, games: int, workers: int) -> float:
    """agent-steps/s of the evaluator: 15 games in lockstep per worker thread, both teams
    one batched forward each per cycle (red: a network opponent)."""
    from battle_rl.evaluation import Evaluator
    from battle_rl.league.opponents import NetOpponent

    ev = Evaluator(max_cycles=300, n_envs=15, workers=workers)
    red = NetOpponent(policy["red"], "red")
    ev.play(policy["blue"], red, workers, seed=999)  # build the games first
    t0 = time.perf_counter()
    results = ev.play(policy["blue"], red, games, seed=0)
    seconds = time.perf_counter() - t0
    return sum(r.agent_steps for r in results) / seconds, seconds


def learner_rate(batch_size: int, updates: int, hparams: str = "fast",
                 device: str = "cpu", overrides: tuple[str, ...] = (),
                 precision: str = "32-true") -> float:
    """Updates/s of the DQN module's step, outside any rollout (Lightning's loop excluded).

    On a GPU the batch is copied from the CPU every update, as Lightning does with the replay
    buffer's batches, and the time waits for the GPU to finish. ``precision="bf16-mixed"``:
    the loss under bfloat16 autocast, as Lightning's ``trainer.precision=bf16-mixed`` does."""
    import torch

    from battle_rl.networks import soft_update
    from battle_rl.training import make_module

    cfg = compose([f"hparams={hparams}", *overrides])
    hp = cfg.hparams
    module = make_module(cfg).to(device)
    opt = module.configure_optimizers()
    rng = np.random.default_rng(0)
    batch = {
        "obs": torch.from_numpy(rng.integers(0, 2, (batch_size, 13, 13, 5), dtype=np.uint8)),
        "next_obs": torch.from_numpy(rng.integers(0, 2, (batch_size, 13, 13, 5), dtype=np.uint8)),
        "action": torch.from_numpy(rng.integers(0, 21, batch_size)),
        "reward": torch.from_numpy(rng.normal(size=batch_size).astype(np.float32)),
        "done": torch.from_numpy(rng.random(batch_size) < 0.05),
    }
    if hasattr(module, "make_buffer"):  # as the replay buffer hands it over (its layout)
        from omegaconf import OmegaConf

        buf = module.make_buffer(OmegaConf.create({"buffer_size": 3 * batch_size + 1}),
                                 batch_size, batch_size, seed=0)
        alive = np.ones(batch_size, bool)
        buf.start_episode(batch["obs"].numpy() / 100.0, alive)
        buf.add(batch["action"].numpy(), batch["reward"].numpy(),
                batch["next_obs"].numpy() / 100.0, batch["done"].numpy(), alive)
        batch = {k: torch.from_numpy(v) for k, v in buf.batch(np.arange(batch_size)).items()}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                              enabled=precision == "bf16-mixed")

    def one_update():
        with autocast:
            loss, _ = module.td_loss({k: v.to(device) for k, v in batch.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.q_net.parameters(), hp.max_grad_norm)
        opt.step()
        soft_update(module.target_net, module.q_net, hp.tau)

    for _ in range(20):
        one_update()
    sync()
    t0 = time.perf_counter()
    for _ in range(updates):
        one_update()
    sync()
    return updates / (time.perf_counter() - t0)


def replay_bytes() -> dict:
    from battle_rl.buffer import ReplayBuffer

    buf = ReplayBuffer(100_000)
    return {"bytes_per_row": buf.bytes_per_row,
            "note": "one row per agent-cycle; an episode adds one extra row per survivor for its "
                    "final observation (<1% at 300 cycles)"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=1500)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: config)")
    args = ap.parse_args()
    import torch

    from battle_rl.networks import QNetwork

    threads = args.threads or compose([]).threads
    torch.set_num_threads(threads)
    floor = env_random_dict_api(args.cycles)
    engine = battle_env_rate(args.cycles)
    torch.manual_seed(0)
    nets = {"red": QNetwork().eval(), "blue": QNetwork().eval()}
    greedy = battle_env_rate(args.cycles, policy=nets)
    shared = QNetwork().eval()
    greedy_shared = battle_env_rate(args.cycles, policy={"red": shared, "blue": shared})
    eval_1, _ = evaluator_rate(nets, 30, workers=1)
    eval_2, _ = evaluator_rate(nets, 30, workers=2)
    torch.set_num_threads(threads)
    default_batch = compose([]).hparams.batch_size
    results = {
        "threads": threads,
        "env_random_parallel_dict_api": floor,
        "env_random_battle_env": engine,
        "rollout_batched_greedy_both_teams": greedy,
        "rollout_ratio_to_parallel_env_random": greedy / floor,
        "rollout_one_network_both_teams": greedy_shared,
        "rollout_one_network_ratio": greedy_shared / floor,
        "evaluator_30_games_1_worker": eval_1,
        "evaluator_30_games_2_workers": eval_2,
        "evaluator_2_workers_ratio": eval_2 / floor,
        "learner_updates_per_s": {str(b): learner_rate(b, args.updates)
                                  for b in sorted({128, default_batch})},
        "replay": replay_bytes(),
    }
    for k, v in results.items():
        print(f"{k}: {v}")
    save("throughput", results)


if __name__ == "__main__":
    main()
