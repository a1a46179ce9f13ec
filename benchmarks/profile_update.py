"""Where one DDQN update and one cycle of play of the default recipe spend their time, and
the learner's speed against another checkout of battle-rl measured in the same run.

    python benchmarks/profile_update.py                 # profile this tree (default recipe)
    python benchmarks/profile_update.py --compare /tmp/base --rounds 6   # A/B, interleaved
    python benchmarks/profile_update.py --compare /tmp/base --smoke      # seconds (the test)
    python benchmarks/profile_update.py --compare /tmp/base --e2e --seeds 0 1 2  # the command

``--compare DIR``: DIR is another checkout (``git worktree add /tmp/base 393b028``). Each
round runs, in fresh subprocesses and alternating which goes first, DIR's code then this
tree's (each imports its own ``battle_rl`` and ``conf/``): short timed blocks of

* ``learner``: updates/s of the update alone: sample a batch from a replay filled by play
  (n-step returns, the top-bottom flip), the TD loss under the recipe's precision, backward,
  clipping, AdamW, the soft target update; no play;
* ``stream``: updates/s of Lightning's loop over the rollout stream: two cycles of play per
  update as in the recipe, at the end of its exploration schedule (epsilon 0.05, as in most of
  a run), no evaluation, checkpoints or logging; played as the checkout's recipe plays (since
  ``play: process``, in an actor process: ``play=inline`` among the overrides times the loop
  with the play in it).

With ``--e2e`` each seed runs the default command itself (``python train.py algo=ddqn
env.max_cycles=300 seed=S``, 2 minutes of training, its final Table I included) in each
checkout, alternating which goes first, and compares the updates made; the policies are left
for the gauntlet (the command to play it is printed).

It reports the medians and the ratio new/base of each, with the machine's load average
beside them (other processes on a 2-core machine move absolute rates; the ratio of blocks run
side by side moves less; with one thread, updates per second of the process's own CPU time
move least, and are what an idle core would do). Config overrides (``threads=1``,
``hparams.batch_size=256``) go among the options, but not right after ``--what`` or
``--seeds``, whose lists would take them.
Writes benchmarks/results/profile_update[-LABEL].json or compare_learner[-LABEL].json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = ["algo=ddqn", "env.max_cycles=300", "logger=none"]
OPPONENTS = Path(os.environ.get("BATTLE_RL_OPPONENTS_DIR",
                                HERE.parent.parent / "shared" / "opponents")).resolve()


def setup(code: Path, overrides: list[str], seed: int = 0):
    """The default recipe's module and rollout dataset, built by ``code``'s battle-rl."""
    sys.path.insert(0, str(code))
    os.chdir(code)
    import pytorch_lightning as pl
    import torch

    from battle_rl.config import compose_overrides, validate_train
    from battle_rl.training import build, configure_threads, resolve_threads

    cfg = compose_overrides("config", [f"opponents_dir={OPPONENTS}", *DEFAULT, *overrides])
    validate_train(cfg)
    configure_threads(resolve_threads(cfg.threads))
    pl.seed_everything(seed, verbose=False)
    module, dataset, _ = build(cfg, Path(tempfile.mkdtemp(prefix="profile-update-")))
    torch.manual_seed(seed)
    return cfg, module, dataset


def fill(dataset, cycles: int) -> None:
    for _ in range(cycles):
        dataset.play_cycle()


def autocast_for(cfg):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16,
                          enabled=str(cfg.trainer.precision).startswith("bf16"))


# the profile's clock: this process's CPU time, which other processes on the machine move far
# less than the wall clock (with one torch thread, what an idle core would take)
clock = time.process_time


class Phases:
    """CPU seconds per named phase, summed over calls."""

    def __init__(self):
        self.seconds, self.calls = defaultdict(float), defaultdict(int)
        self.mark = clock()

    def lap(self, name: str) -> None:
        now = clock()
        self.seconds[name] += now - self.mark
        self.calls[name] += 1
        self.mark = now

    def wrap(self, obj, attr: str, name: str) -> None:
        """Time every call of ``obj.attr`` as phase ``name`` (outermost call only)."""
        inner, depth = getattr(obj, attr), [0]

        def timed(*args, **kwargs):
            depth[0] += 1
            t0 = clock()
            try:
                return inner(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    self.seconds[name] += clock() - t0
                    self.calls[name] += 1

        setattr(obj, attr, timed)

    def per(self, n: int) -> dict[str, float]:
        return {k: 1000 * v / n for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}


_LOOPS: dict = {}  # one optimiser and one stream per module, kept across calls


def learner_updates(cfg, module, dataset, updates: int, phases: Phases | None = None):
    """``updates`` updates without play (Lightning's automatic optimisation, by hand)."""
    import torch

    hp = cfg.hparams
    if id(module) not in _LOOPS:
        dataset.updates_per_cycle = 1e9  # credit for every update after one cycle: no play
        _LOOPS[id(module)] = (module.configure_optimizers(), iter(dataset))
    opt, stream = _LOOPS[id(module)]
    autocast = autocast_for(cfg)
    p = phases or Phases()
    for _ in range(updates):
        p.mark = clock()
        batch = next(stream)
        p.lap("sample batch (buffer, n-step, flip, to torch)")
        with autocast:
            loss, _ = module.td_loss(batch)
        p.lap("forward + TD loss (both nets, masks, channels, dtype)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        p.lap("backward")
        torch.nn.utils.clip_grad_norm_(module.q_net.parameters(), hp.max_grad_norm)
        p.lap("gradient clipping")
        opt.step()
        p.lap("AdamW step")
        module.on_train_batch_end(None, batch, 0)
        p.lap("soft target update")
    return p


def learner_rate(cfg, module, dataset, seconds: float) -> tuple[float, float]:
    """Updates per second of wall-clock time and per second of this process's CPU time."""
    learner_updates(cfg, module, dataset, 20)  # warm up
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        learner_updates(cfg, module, dataset, 20)
        n += 20
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def stream_rate(cfg, module, dataset, seconds: float) -> tuple[float, float]:
    """Updates/s of Lightning's fit loop over the rollout stream (the recipe's play ratio)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from battle_rl.callbacks import LRDecay

    dataset.cycles = max(dataset.cycles, int(dataset.epsilon_schedule.decay))  # epsilon's end
    marks = {}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 10:
                marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()
            if batch_idx > 10 and time.perf_counter() - marks["t0"] > seconds:
                marks["n"], marks["t1"] = batch_idx - 10, time.perf_counter()
                marks["c1"] = time.process_time()
                trainer.should_stop = True

    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=cfg.trainer.precision,
                         max_steps=10**9, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=cfg.trainer.get("log_every_n_steps", 50),
                         gradient_clip_val=None, callbacks=[Clock(), LRDecay(0.6, 0.1)])
    trainer.fit(module, DataLoader(dataset, batch_size=None, num_workers=0))
    return marks["n"] / (marks["t1"] - marks["t0"]), marks["n"] / (marks["c1"] - marks["c0"])


def rollout_phases(module, dataset, cycles: int) -> Phases:
    """Where a cycle of play goes: engine, opponent, the learner's forward, exploration,
    replay insertion; the rest (observation copies, bookkeeping) is the remainder."""
    dataset.cycles = max(dataset.cycles, int(dataset.epsilon_schedule.decay))
    p = Phases()
    p.wrap(dataset.env, "step", "engine step (BattleEnv.step)")
    p.wrap(dataset.env, "reset", "engine reset")
    p.wrap(dataset.opponent, "act", "opponent's actions")
    p.wrap(dataset, "_greedy", "learner's greedy forward")
    p.wrap(dataset, "_random", "exploration (the scripted guide)")
    p.wrap(dataset.buffer, "add", "replay insertion (add)")
    p.wrap(dataset.buffer, "start_episode", "replay insertion (episode start)")
    steps0, t0 = dataset.agent_steps, clock()
    for _ in range(cycles):
        dataset.play_cycle()
    total = clock() - t0
    p.seconds["rest (stored views, mirror, bookkeeping)"] = total - sum(p.seconds.values())
    p.seconds["agent_steps_per_s"] = (dataset.agent_steps - steps0) / total * cycles / 1000
    return p


def engine_random_rate(cycles: int) -> float:
    """agent-steps/s of BattleEnv with uniform random actions (the engine's floor)."""
    import numpy as np

    from battle_rl.env import TEAMS, BattleEnv

    env, rng = BattleEnv(max_cycles=300), np.random.default_rng(0)
    steps, t0, done = 0, clock(), True
    for _ in range(cycles):
        if done:
            env.reset(seed=int(rng.integers(1 << 30)))
        alive = env.alive
        step = env.step({t: rng.integers(0, 21, 81) for t in TEAMS})
        steps += int(alive["red"].sum() + alive["blue"].sum())
        done = step.done
    return steps / (clock() - t0)


def op_table(cfg, module, dataset, updates: int, rows: int = 18) -> str:
    """torch.profiler's op table over ``updates`` learner updates (CPU self time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner_updates(cfg, module, dataset, updates)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def profile_main(args, overrides) -> None:
    import torch

    from common import machine, save

    cfg, module, dataset = setup(Path(args.code), overrides)
    fill(dataset, args.fill)
    learner_updates(cfg, module, dataset, 20)
    updates = args.updates
    t0 = clock()
    lp = learner_updates(cfg, module, dataset, updates)
    learner_ms = 1000 * (clock() - t0) / updates
    table = op_table(cfg, module, dataset, max(10, updates // 5))
    rp = rollout_phases(module, dataset, args.cycles)
    rate = rp.seconds.pop("agent_steps_per_s") * 1000 / args.cycles
    rollout_ms = rp.per(args.cycles)
    engine = engine_random_rate(args.cycles)
    out = {"code": str(args.code), "overrides": DEFAULT + overrides,
           "threads": torch.get_num_threads(), "precision": str(cfg.trainer.precision),
           "batch_size": int(cfg.hparams.batch_size),
           "bytes_per_row": int(getattr(dataset.buffer, "bytes_per_row", 0)),
           "update_ms": learner_ms, "update_phases_ms": lp.per(updates),
           "cycle_ms": sum(rollout_ms.values()), "cycle_phases_ms": rollout_ms,
           "rollout_agent_steps_per_s": rate, "engine_random_agent_steps_per_s": engine,
           "rollout_to_engine": rate / engine, "uptime": uptime(),
           "op_table": table.splitlines()}
    print(f"update: {learner_ms:.2f} CPU ms ({1000 / learner_ms:.0f}/s), "
          f"batch {out['batch_size']}, {out['precision']}, {out['threads']} threads")
    for k, v in out["update_phases_ms"].items():
        print(f"  {v:7.3f} ms  {k}")
    print(table)
    print(f"cycle of play: {out['cycle_ms']:.2f} CPU ms, {rate:,.0f} agent-steps/s; engine with "
          f"random actions {engine:,.0f} ({rate / engine:.2f} of it)")
    for k, v in rollout_ms.items():
        print(f"  {v:7.3f} ms  {k}")
    if not args.smoke:
        label = f"-{args.label}" if args.label else ""
        save(f"profile_update{label}", {**out, "machine_now": machine()})


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def worker_main(args, overrides) -> None:
    cfg, module, dataset = setup(Path(args.code), overrides, seed=args.seed)
    fill(dataset, args.fill)
    (what,) = args.what  # a worker times one block
    timed = {"learner": learner_rate, "stream": stream_rate}[what]
    steps0 = dataset.agent_steps
    rate, cpu_rate = timed(cfg, module, dataset, args.seconds)
    print("RESULT " + json.dumps({"block": what, "rate": rate, "cpu_rate": cpu_rate,
                                  "agent_steps_played": dataset.agent_steps - steps0,
                                  "load": os.getloadavg()[0]}), flush=True)


def run_worker(code: Path, what: str, args, overrides) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--code", str(code),
           "--what", what, "--seconds", str(args.seconds), "--fill", str(args.fill),
           "--seed", str(args.seed), *overrides]
    env = {**os.environ, "PYTHONPATH": str(code), "BATTLE_RL_OPPONENTS_DIR": str(OPPONENTS)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{code} {what} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    if res["block"] != what:  # (before 2026-12-06 every worker timed the stream)
        raise SystemExit(f"{code}: asked for the {what} block, the worker timed {res['block']}")
    return res


def compare_main(args, overrides) -> dict:
    base, new = Path(args.compare).resolve(), HERE.parent
    rates = {w: {"base": [], "new": []} for w in args.what}
    cpu = {w: {"base": [], "new": []} for w in args.what}  # updates per CPU second
    loads = []
    for r in range(args.rounds):
        for what in args.what:
            order = [("base", base), ("new", new)] if r % 2 == 0 else [("new", new),
                                                                        ("base", base)]
            for name, code in order:
                res = run_worker(code, what, args, overrides)
                rates[what][name].append(res["rate"])
                cpu[what][name].append(res["cpu_rate"])
                loads.append(res["load"])
            b, n = rates[what]["base"][-1], rates[what]["new"][-1]
            cb, cn = cpu[what]["base"][-1], cpu[what]["new"][-1]
            print(f"round {r + 1}/{args.rounds} {what}: base {b:.1f}, new {n:.1f} updates/s "
                  f"(x{n / b:.2f}); per CPU second {cb:.1f}, {cn:.1f} (x{cn / cb:.2f}); "
                  f"load {loads[-1]:.2f}", flush=True)
    summary = {}
    for what in args.what:
        summary[what] = {}
        for unit, r in (("wall", rates[what]), ("cpu", cpu[what])):
            ratios = [n / b for n, b in zip(r["new"], r["base"])]
            summary[what][unit] = {"base_median": statistics.median(r["base"]),
                                   "new_median": statistics.median(r["new"]),
                                   "ratio_median": statistics.median(ratios),
                                   "ratio_min": min(ratios), "ratio_max": max(ratios), **r}
            s_ = summary[what][unit]
            print(f"{what}: base {s_['base_median']:.1f}, new {s_['new_median']:.1f} updates per "
                  f"{'second' if unit == 'wall' else 'CPU second'} (medians of {args.rounds}); "
                  f"new/base x{s_['ratio_median']:.2f} (rounds {min(ratios):.2f}-"
                  f"{max(ratios):.2f})")
    out = {"base": str(base), "new": str(new), "overrides": DEFAULT + overrides,
           "seconds_per_block": args.seconds, "rounds": args.rounds, "fill_cycles": args.fill,
           "load_average_1min_per_block": loads, "uptime_end": uptime(), "results": summary}
    print(out["uptime_end"])
    if not args.smoke:
        from common import save

        label = f"-{args.label}" if args.label else ""
        save(f"compare_learner{label}", out)
    return out


def e2e_main(args, overrides) -> dict:
    """The default command in both checkouts, seed by seed, alternating which goes first."""
    from battle_rl.safe_load import torch_load

    base, new = Path(args.compare).resolve(), HERE.parent
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="e2e-")).resolve()
    steps = {"base": [], "new": []}
    policies = {"base": [], "new": []}
    for i, seed in enumerate(args.seeds):
        order = [("base", base), ("new", new)] if i % 2 == 0 else [("new", new), ("base", base)]
        for name, code in order:
            run = out_dir / f"{name}-seed{seed}"
            cmd = [sys.executable, "train.py", "algo=ddqn", "env.max_cycles=300", f"seed={seed}",
                   f"hydra.run.dir={run}", f"opponents_dir={OPPONENTS}", *overrides]
            env = {**os.environ, "PYTHONPATH": str(code)}
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env=env)
            if r.returncode:
                raise SystemExit(f"{name} seed {seed} failed:\n{r.stderr[-3000:]}")
            steps[name].append(int(torch_load(run / "checkpoints" / "last.ckpt")["global_step"]))
            policies[name].append(str(run / "policy.pt"))
            print(f"seed {seed} {name}: {steps[name][-1]} updates, command "
                  f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    ratios = [n / b for n, b in zip(steps["new"], steps["base"])]
    print(f"updates: base {steps['base']}, new {steps['new']}; new/base x"
          f"{statistics.median(ratios):.2f} (seeds {min(ratios):.2f}-{max(ratios):.2f})")
    print("strength (30 games a side against the gauntlet):\n  python benchmarks/strength.py "
          + " ".join(f"--policy {p}" for p in policies["base"] + policies["new"])
          + " --label e2e-issue42")
    result = {"base": str(base), "new": str(new), "seeds": args.seeds, "overrides": overrides,
              "updates": steps, "ratio_median": statistics.median(ratios), "policies": policies,
              "uptime_end": uptime()}
    if not args.smoke:
        from common import save

        label = f"-{args.label}" if args.label else ""
        save(f"compare_default_command{label}", result)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", default=None, help="another checkout: A/B against it")
    ap.add_argument("--what", nargs="+", default=["learner", "stream"],
                    choices=["learner", "stream"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=15.0, help="timed block per subprocess")
    ap.add_argument("--fill", type=int, default=300, help="cycles of play before timing")
    ap.add_argument("--updates", type=int, default=200, help="profile: updates timed")
    ap.add_argument("--cycles", type=int, default=300, help="profile: cycles of play timed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--e2e", action="store_true", help="with --compare: the default command")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="--e2e seeds")
    ap.add_argument("--out", default=None, help="--e2e: folder for the runs")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no results file")
    ap.add_argument("--label", default=None, help="added to the results file's name")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--code", default=str(HERE.parent), help=argparse.SUPPRESS)
    args, overrides = ap.parse_known_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.fill = 1, min(args.seconds, 1.0), min(args.fill, 20)
        args.updates, args.cycles = min(args.updates, 5), min(args.cycles, 5)
    if args.worker:
        return worker_main(args, overrides)
    sys.path.insert(0, str(HERE))
    if args.compare and args.e2e:
        return e2e_main(args, overrides)
    if args.compare:
        return compare_main(args, overrides)
    return profile_main(args, overrides)


if __name__ == "__main__":
    main()
