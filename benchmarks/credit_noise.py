"""Why VDN/QMIX learn slower per sample than DDQN here: how noisy is each one's gradient?

DDQN learns each agent's value from that agent's own reward; VDN and QMIX learn from one team
TD error per team step, in which one agent's contribution is mixed with 80 others'. This
measures the consequence directly, on the same replayed data and the same network weights:

- a reference gradient of each loss over a large batch (``--ref`` team steps, i.e. ``--ref``
  x alive agents per-agent transitions for DDQN);
- the cosine similarity between minibatch gradients and that reference, for minibatches of
  growing size, counted in agent samples (the forward/backward cost of an update).

A cosine near 1 means a minibatch points where the full-data gradient points; the number of
agent samples needed for a given cosine is the price of an update direction.

    python benchmarks/credit_noise.py                       # untrained network, random play
    python benchmarks/credit_noise.py --checkpoint VDN_RUN/checkpoints/last.ckpt QMIX_RUN/...

Writes ``benchmarks/results/credit_noise.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from battle_rl.algos.ddqn import td_target  # noqa: E402
from battle_rl.algos.qmix import QMIX  # noqa: E402
from battle_rl.buffer import TeamReplayBuffer  # noqa: E402
from battle_rl.env import BattleEnv  # noqa: E402
from battle_rl.league.opponents import make_opponent  # noqa: E402
from battle_rl.networks import greedy_actions  # noqa: E402
from battle_rl.safe_load import torch_load  # noqa: E402


def fill(buffer, env, opponent, learner, episodes, eps, seed):
    rng = np.random.default_rng(seed)
    for ep in range(episodes):
        obs = env.reset(seed=seed + ep)
        opponent.new_episode()
        buffer.start_episode(obs["blue"], env.alive["blue"])
        while True:
            alive = env.alive
            blue = greedy_actions(learner.agent_net, obs["blue"], alive["blue"], np.arange(81))
            explore = rng.random(81) < eps
            blue[explore] = rng.integers(0, 21, int(explore.sum()))
            step = env.step({"blue": blue, "red": opponent.act(obs["red"], alive["red"])})
            buffer.add(blue, step.reward["blue"], step.obs["blue"], step.died["blue"],
                       step.alive["blue"])
            obs = step.obs
            if step.done:
                break


def team_batch(buffer, idx) -> dict:
    """The team steps ``idx`` as TeamReplayBuffer.sample would return them, as tensors."""
    nxt, done = buffer.next[idx], buffer.done[idx]
    b = {"obs": buffer.obs[idx], "state": buffer.state[idx], "alive": buffer.alive[idx],
         "action": buffer.action[idx].astype(np.int64), "reward": buffer.reward[idx],
         "next_obs": buffer.obs[nxt], "next_state": buffer.state[nxt],
         "next_alive": buffer.alive[nxt] & ~done[:, None], "done": done}
    return {k: torch.from_numpy(v) for k, v in b.items()}


def flat_grad(m, loss) -> torch.Tensor:
    """The loss's gradient with respect to the agent network (what both methods learn)."""
    params = list(m.agent_net.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params)])


def team_loss(m, buffer, rows) -> torch.Tensor:
    m._log_step = lambda *a: None
    return m.training_step(team_batch(buffer, rows), 0)


def ddqn_loss(m, buffer, per_agent, rows, slots) -> torch.Tensor:
    """Independent per-agent Double-DQN loss on agent transitions (row, slot): each agent's
    own reward and death, through the same agent network: what DDQN optimises."""
    t = torch.from_numpy
    nxt = buffer.next[rows]
    q = m.agent_net(m.preprocess(t(buffer.obs[rows, slots])), t(slots))
    q = q.gather(1, t(buffer.action[rows, slots].astype(np.int64)).unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        x = m.preprocess(t(buffer.obs[nxt, slots]))
        nt, no = m.target_agent(x, t(slots)), m.agent_net(x, t(slots))
        done = per_agent["died"][rows, slots] | ~buffer.alive[nxt, slots] | buffer.done[rows]
        y = td_target(t(per_agent["reward"][rows, slots]), t(done), nt, no, m.hparams.gamma)
    return F.smooth_l1_loss(q, y)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--eps", type=float, default=0.3, help="exploration while collecting")
    p.add_argument("--checkpoint", nargs="*", help="vdn and/or qmix last.ckpt: their weights")
    p.add_argument("--opponent", default="random")
    p.add_argument("--opponents-dir", default=str(ROOT.parent / "shared" / "opponents"))
    p.add_argument("--ref", type=int, default=256, help="team steps in the reference batch")
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "credit_noise.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    results = {"args": vars(args), "rows": []}
    models = {mixer: QMIX(name=mixer, mixer=mixer) for mixer in ("vdn", "qmix")}
    models["qmix"].agent_net.load_state_dict(models["vdn"].agent_net.state_dict())
    models["qmix"].target_agent.load_state_dict(models["vdn"].target_agent.state_dict())
    for ckpt in args.checkpoint or []:  # a vdn and/or a qmix checkpoint: their weights
        sd = torch_load(ckpt)
        models[sd["hyper_parameters"]["mixer"]].load_state_dict(sd["state_dict"])
    env = BattleEnv(max_cycles=300, reward=dict(step_reward=0.01, attack_opponent_reward=2.0))
    buf = TeamReplayBuffer(300 * args.episodes + 10, state_fn=env.state, seed=args.seed)
    # per-agent rewards and deaths beside the team rows, for the DDQN comparison
    per_agent = {"reward": np.zeros((buf.capacity, 81), np.float32),
                 "died": np.zeros((buf.capacity, 81), bool)}
    team_add = buf.add

    def add_and_keep(action, reward, next_obs, died, alive_next):
        per_agent["reward"][buf.current] = reward
        per_agent["died"][buf.current] = died
        team_add(action, reward, next_obs, died, alive_next)

    buf.add = add_and_keep
    opp = make_opponent(args.opponent, args.opponents_dir, seed=args.seed)
    t0 = time.perf_counter()
    fill(buf, env, opp, models["vdn"], args.episodes, args.eps, args.seed)
    results["collect_seconds"] = round(time.perf_counter() - t0, 1)
    rng = np.random.default_rng(args.seed + 1)
    ready = np.flatnonzero(buf.ready[: buf.size])
    ref_idx = np.sort(rng.choice(ready, min(args.ref, len(ready)), replace=False))
    ref_rows, ref_slots = np.nonzero(buf.alive[ref_idx])
    agents_per_step = len(ref_rows) / len(ref_idx)
    pairs_rows, pairs_slots = np.nonzero(buf.alive[ready])  # every agent transition
    for method in ("ddqn", "vdn", "qmix"):
        m = models["vdn" if method == "ddqn" else method]
        if method == "ddqn":
            ref = flat_grad(m, ddqn_loss(m, buf, per_agent, ref_idx[ref_rows], ref_slots))
        else:
            ref = flat_grad(m, team_loss(m, buf, ref_idx))
        for size in (1, 2, 4, 8, 16, 32, 64):
            k = int(round(size * agents_per_step))
            cos = []
            for _ in range(args.draws):
                if method == "ddqn":  # the same number of agent samples, drawn independently
                    pick = rng.integers(0, len(pairs_rows), k)
                    loss = ddqn_loss(m, buf, per_agent, ready[pairs_rows[pick]],
                                     pairs_slots[pick])
                else:
                    loss = team_loss(m, buf, rng.choice(ready, size))
                cos.append(F.cosine_similarity(flat_grad(m, loss), ref, 0).item())
            row = {"method": method, "agent_samples": k, "team_steps": size,
                   "cosine": round(float(np.mean(cos)), 3)}
            results["rows"].append(row)
            print(f"{method:5s} {k:5d} agent samples ({size:2d} team steps): cos(minibatch "
                  f"gradient, reference gradient) = {row['cosine']:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(out)


if __name__ == "__main__":
    main()
