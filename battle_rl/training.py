"""The training task behind ``train.py``: config -> env + learner -> dataset -> Trainer -> policy.

Order matters: every check (config ranges, opponent files, logger, output folder, resume
checkpoint) runs before the first environment is built, so a bad command costs seconds.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate, to_absolute_path
from omegaconf import DictConfig, open_dict
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from battle_rl.callbacks import (EvalCallback, GracefulStop, LRDecay, ReplayCheckpoint,
                                 SelfPlaySnapshots, SyncStop, WeightAverage)
from battle_rl.config import ConfigError, native_bf16, validate_train
from battle_rl.distributed import check_launch, own_stream
from battle_rl.env import BattleEnv
from battle_rl.evaluation import evaluate, format_table, write_eval_json
from battle_rl.league.opponents import (SHIPPED, check_opponent, command_line_opponents, find_pool,
                                        leave_out_missing, left_out_notice, make_mix, make_opponent,
                                        write_opponents_record)
from battle_rl.networks import export_policy
from battle_rl.outputs.display import (BattleProgressBar, print_config, print_note,
                                       print_run_summary)
from battle_rl.outputs.loggers import (check_writable, close_logger, make_loggers, start_wandb,
                                       where_line)
from battle_rl.outputs.plot import plot_table
from battle_rl.resume import check_compatible, find_checkpoint, load_replay, replay_file
from battle_rl.safe_load import torch_load
from battle_rl.score import kill_margin_score, worst_win_rate


def opponents_dir(cfg: DictConfig) -> Path:
    return Path(to_absolute_path(str(cfg.opponents_dir)))


def named_policies(cfg: DictConfig) -> dict[str, str]:
    """``policies.NAME=PATH``: policy files that can be opponents by NAME (absolute paths)."""
    return {name: to_absolute_path(str(path)) for name, path in (cfg.get("policies") or {}).items()}


def eval_opponents(cfg: DictConfig) -> dict:
    """``eval.opponents`` built by name (course nets, built-ins, ``policies.NAME``)."""
    odir, policies = opponents_dir(cfg), named_policies(cfg)
    return {n: make_opponent(n, odir, seed=cfg.seed, policies=policies)
            for n in cfg.eval.opponents}


def leave_out_course_opponents(cfg: DictConfig, named: set[str] | None) -> list[str]:
    """The course opponents that come from the defaults and whose files are missing leave the
    training mix (weight 0: the others' weights are renormalised) and ``eval.opponents``; a
    list left empty falls back to what ships. Returns those left out."""
    odir = opponents_dir(cfg)
    training = [n for n, w in cfg.opponent.weights.items() if w > 0]
    kept, out = leave_out_missing(training, odir, named)
    kept_eval, out_eval = leave_out_missing(list(cfg.eval.opponents), odir, named)
    if not (out or out_eval):
        return []
    with open_dict(cfg):
        for name in out:
            cfg.opponent.weights[name] = 0
        if not kept:  # nothing left to train against: what ships
            for name in SHIPPED:
                cfg.opponent.weights[name] = 1
        cfg.eval.opponents = kept_eval or list(SHIPPED)
    return list(dict.fromkeys(out + out_eval))


def init_weights(module, path: str) -> None:
    """``init_from=PATH``: start from a trained policy's weights (the same network shape);
    the target network starts as a copy. A resumed run's checkpoint overrides it."""
    from battle_rl.networks import load_policy

    try:
        module.start_from(load_policy(path).state_dict())
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()] or [str(e)]
        raise ConfigError(f"init_from={path}: its network does not fit this run's algo.network "
                          f"({lines[0]})") from None


THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def resolve_threads(threads, devices=1, actors: int = 0) -> int:
    """``threads: auto``: the cores this process may use, shared among the processes of one
    machine (DDP ranks), at most 4, less one for each actor process (``play: process``).
    On the idle 2-core machine two threads make 1.3x (default network) to 1.5x (the
    champion's) the updates per second of one (``benchmarks/learner_speed.py``); on a busy
    machine one thread is much faster."""
    if threads != "auto":
        return int(threads)
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE")
    processes = int(local) if local else (devices if isinstance(devices, int) else 1)
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return max(1, min(4, cores // max(1, processes) - actors))


def configure_threads(threads: int) -> None:
    """Small convolutions run fastest on few intra-op threads; one job = its share of cores.

    Caps torch, the BLAS / OpenMP pools already loaded (threadpoolctl) and, through the
    environment, anything started later, so parallel sweep jobs do not fight for cores."""
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # optional: torch's own pools are capped below either way
        pass
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def preflight(cfg: DictConfig, run_dir: Path) -> Path | None:
    """All checks that need no environment; returns the checkpoint to resume from, if any."""
    validate_train(cfg)
    plays_in_process(cfg)  # a learner that cannot have it fails here
    odir, policies = opponents_dir(cfg), named_policies(cfg)
    for name, weight in cfg.opponent.weights.items():
        if weight > 0:
            check_opponent(name, odir, policies)
    if cfg.eval.every_n_steps > 0 or cfg.eval.final_episodes > 0 or \
            cfg.eval.get("rematch_episodes", 0) > 0:
        for name in cfg.eval.opponents:
            check_opponent(name, odir, policies)
    if cfg.get("init_from"):  # loads into a throw-away learner: a mismatch fails here
        if not Path(to_absolute_path(str(cfg.init_from))).is_file():
            raise FileNotFoundError(f"init_from={cfg.init_from}: no such file")
        init_weights(make_module(cfg), to_absolute_path(str(cfg.init_from)))
    if _video_settings(cfg.eval) is not None:  # builds (checks) the video_* keys when on
        if cfg.eval.video_opponent not in (None, *cfg.eval.opponents):
            raise ConfigError(f"eval.video_opponent={cfg.eval.video_opponent!r} is not allowed: "
                              f"one of eval.opponents ({', '.join(cfg.eval.opponents)}) or null")
    check_writable(run_dir)
    return find_checkpoint(to_absolute_path(str(cfg.resume))) if cfg.get("resume") else None


def make_module(cfg: DictConfig):
    """The learner (a LightningModule) of ``cfg.algo`` with the run's hyperparameters: the
    keys of ``cfg.hparams`` its class lists in ``HPARAMS`` (see battle_rl.algos).

    Plain dicts and lists, not omegaconf nodes: they are saved in checkpoints as
    hyper-parameters, and the safe loader reads plain types only."""
    keys = getattr(get_class(cfg.algo._target_), "HPARAMS",
                   ("gamma", "lr", "tau", "weight_decay", "max_grad_norm"))
    return instantiate(cfg.algo, **{k: cfg.hparams[k] for k in keys}, _recursive_=False,
                       _convert_="all")


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's own reading of the checkpoint to resume from, through the safe loader."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return torch_load(path)


def build(cfg: DictConfig, run_dir: Path):
    """The learner module, its rollout dataset, and the evaluation callback (or None)."""
    hp = cfg.hparams
    odir, policies = opponents_dir(cfg), named_policies(cfg)
    module = make_module(cfg)
    if cfg.get("init_from"):
        init_weights(module, to_absolute_path(str(cfg.init_from)))
    env = BattleEnv(cfg.env.map_size, cfg.env.max_cycles, dict(cfg.reward),
                    corrected_first_cycle=cfg.env.get("corrected_first_cycle", False))
    opponent = make_mix(dict(cfg.opponent.weights), odir, seed=cfg.seed,
                        self_play=self_play_settings(cfg), policies=policies)
    pool = find_pool(opponent)
    if pool is not None:
        pool.bind(module.policy_net())  # snapshots copy the learner's network
    dataset = module.make_dataset(env, opponent, hp, seed=cfg.seed)
    dataset.play_in_process = plays_in_process(cfg)
    module.rollout = dataset
    eval_cb = None
    if cfg.eval.every_n_steps > 0 or cfg.eval.get("rematch_episodes", 0) > 0:
        eval_cb = EvalCallback(
            opponents=eval_opponents(cfg),
            every_n_steps=cfg.eval.every_n_steps,
            episodes=cfg.eval.episodes,
            max_cycles=cfg.eval.max_cycles,
            seed=cfg.eval.seed + 10_000,  # not the final evaluation's games
            stop_win_rate=cfg.eval.stop_win_rate,
            patience=cfg.eval.patience,
            workers=cfg.eval.workers,
            history_path=run_dir / "eval_history.jsonl",
            video_every=cfg.eval.video_every,
            video=_video_settings(cfg.eval),
            video_opponent=cfg.eval.video_opponent,
            video_dir=run_dir / "videos",
            max_train_seconds=cfg.eval.get("max_train_seconds"),
            sides=tuple(cfg.eval.get("sides") or ("blue",)),
        )
    return module, dataset, eval_cb


def plays_in_process(cfg: DictConfig) -> bool:
    """``play: process`` (battle_rl.actor) where the run can have it: a replay learner (PPO's
    rollouts are played with the very weights it updates), a CPU learner (a forked process
    cannot use the GPU of its parent) and a system that forks and shares memory; elsewhere the
    game is played inline. A learner that cannot have it is a configuration error."""
    from battle_rl.actor import available
    from battle_rl.data import RolloutDataset

    if cfg.get("play", "inline") != "process":
        return False
    stream = getattr(get_class(cfg.algo._target_), "dataset_class", None)
    if not (isinstance(stream, type) and issubclass(stream, RolloutDataset)):
        raise ConfigError(f"play=process is for the replay learners (ddqn, dqn, mfq, vdn, "
                          f"qmix), not algo={cfg.algo.name}: use play=inline")
    return not on_gpu(cfg) and available()


def on_gpu(cfg: DictConfig) -> bool:
    """Whether the learner runs on a GPU (``trainer.accelerator``: gpu, or auto with one)."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _video_settings(eval_cfg: DictConfig):
    if eval_cfg.video_every <= 0:
        return None
    from battle_rl.outputs.video import VideoSettings  # rendering code only when videos are on

    return VideoSettings.from_config(eval_cfg)


def self_play_settings(cfg: DictConfig) -> dict:
    sp = cfg.get("self_play") or {}
    return {k: sp[k] for k in ("sampling", "pool_size") if k in sp}


def self_play_callback(cfg: DictConfig, dataset, run_dir: Path) -> SelfPlaySnapshots | None:
    pool = find_pool(dataset.opponent)
    if pool is None:
        return None
    sp = cfg.get("self_play") or {}
    return SelfPlaySnapshots(pool, int(sp.get("every_n_steps", 500)),
                             run_dir / "snapshots" if sp.get("export", True) else None)


def run_name(cfg: DictConfig) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        name = HydraConfig.get().job.override_dirname or "defaults"
    except ValueError:
        name = "defaults"
    if cfg.get("job_seeds") is not None:  # one of the seeds a job trains in turn (train_seeds)
        kept = [part for part in name.split(",") if part and not part.startswith("seed=")]
        name = ",".join([*(kept if kept != ["defaults"] else []), f"seed={cfg.seed}"])
    return name


def emulated_bf16(cfg: DictConfig) -> bool:
    """bf16-mixed on a CPU that has no bfloat16 instructions: recipes choose bf16 for speed
    (docs/benchmarks.md, "bf16"), and there it costs speed instead."""
    if str(cfg.trainer.get("precision")) != "bf16-mixed" or on_gpu(cfg):
        return False
    return native_bf16(cfg.trainer.get("accelerator", "cpu")) is False  # a torch without the probes: no claim


def final_weights(cfg: DictConfig, trainer: pl.Trainer, module, eval_cb, average,
                  interrupted: bool) -> str:
    """Load the weights ``policy.pt`` gets into the policy network; returns what they are.
    The candidates: the network's own weights at the end (with ``hparams.weight_average``, the
    mean and the last weights, in that order) and the best evaluation's, where it is not
    those. With ``eval.rematch_episodes`` they play it out; without, the best evaluation's are
    kept where there is one, else the first candidate. An interrupted run keeps the first."""
    net = module.policy_net()
    candidates = {"final": copy.deepcopy(net.state_dict())}
    about = {"final": "final"}
    if average is not None and average.averaged() and average.last_state is not None:
        candidates = {"mean": candidates["final"], "last": average.last_state}
        about = {"mean": f"the mean of the last {average.averaged()} updates' weights",
                 "last": "the last weights"}
    if eval_cb is None or interrupted:
        return next(iter(about.values()))
    best = None
    if eval_cb.best_state is not None:
        if eval_cb.last_step != trainer.global_step:
            eval_cb.run(trainer, module)  # the network's own weights get their chance too
        if eval_cb.best_step != trainer.global_step:
            best = f"step {eval_cb.best_step}"
            candidates[best] = eval_cb.best_state
            about[best] = f"best evaluation (step {eval_cb.best_step})"
    episodes = cfg.eval.get("rematch_episodes", 0)
    if episodes and len(candidates) > 1:
        chosen = eval_cb.rematch(net, candidates, episodes)
    else:
        chosen = best or next(iter(candidates))
    net.load_state_dict(candidates[chosen])
    return about[chosen]


def train(cfg: DictConfig, run_dir: Path, extra_callbacks: list | None = None) -> dict:
    """Train, export ``policy.pt``, run the final evaluation; returns a summary dict.

    ``extra_callbacks`` (benchmarks, tests) are added to the Trainer's; they may read the
    evaluation callback as ``trainer.eval_callback``. Under DDP (``battle_rl.distributed``)
    every rank runs this function; only rank 0 evaluates, exports and returns the policy path.
    With ``job_seeds: N`` (> 1), :func:`train_seeds` trains N seeds in turn instead.
    """
    if int(cfg.get("job_seeds") or 1) > 1:
        return train_seeds(cfg, run_dir, extra_callbacks)
    left_out = leave_out_course_opponents(cfg, command_line_opponents())
    resume_from = preflight(cfg, run_dir)
    if cfg.get("print_config", False) and rank_zero_only.rank == 0:  # not again on DDP ranks
        print_config(cfg)
    if left_out and rank_zero_only.rank == 0:
        print_note(left_out_notice(left_out, opponents_dir(cfg)))
    if emulated_bf16(cfg) and rank_zero_only.rank == 0:
        print_note("note: trainer.precision=bf16-mixed on a CPU without bfloat16 instructions "
                   "(AVX512-BF16 or AMX) is emulated and slower than float32; "
                   "trainer.precision=32-true avoids that")
    in_process = plays_in_process(cfg)
    if cfg.get("play") == "process" and not in_process and rank_zero_only.rank == 0:
        print_note("note: play=process needs a CPU learner, fork and shared memory: this run "
                   "plays the game inline, in the learner's process")
    write_opponents_record(run_dir / "opponents.json", {
        "training": {n: w for n, w in cfg.opponent.weights.items() if w > 0},
        "evaluation": list(cfg.eval.opponents)}, left_out, opponents_dir(cfg))
    configure_threads(resolve_threads(cfg.threads, cfg.trainer.get("devices", 1),
                                      actors=int(in_process)))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    loggers = make_loggers(cfg, run_dir, run_name(cfg), resuming=resume_from is not None)
    dataset = None
    try:
        module, dataset, eval_cb = build(cfg, run_dir)
        ckpt_dir = run_dir / "checkpoints"
        step = check_compatible(resume_from, module) if resume_from is not None else None
        replay = getattr(dataset, "buffer", None)  # on-policy learners (PPO) have none
        stop = GracefulStop()
        callbacks: list[pl.Callback] = [
            pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="step-{step}",
                                         every_n_train_steps=cfg.checkpoint_every,
                                         save_top_k=0, save_last=True),
            stop,
        ]
        if cfg.checkpoint_buffer and replay is not None:
            callbacks.append(ReplayCheckpoint(dataset, ckpt_dir))
        if eval_cb is not None:
            callbacks.append(eval_cb)
        snapshots = self_play_callback(cfg, dataset, run_dir)
        if snapshots is not None:
            callbacks.append(snapshots)
        lr_decay = cfg.hparams.get("lr_decay") or {}
        if lr_decay.get("after") is not None:
            callbacks.append(LRDecay(float(lr_decay.after), float(lr_decay.get("to", 0.1))))
        average = None
        if (cfg.hparams.get("weight_average") or {}).get("after") is not None:
            average = WeightAverage(float(cfg.hparams.weight_average.after))
            callbacks.append(average)
        callbacks += extra_callbacks or []
        if cfg.trainer.get("enable_progress_bar", True):
            callbacks.append(BattleProgressBar())
        callbacks.append(SyncStop())  # last: after every callback that may stop training
        trainer = pl.Trainer(**cfg.trainer, logger=loggers or False, callbacks=callbacks,
                             default_root_dir=str(run_dir), plugins=[SafeCheckpointIO()])
        trainer.eval_callback = eval_cb
        check_launch(trainer)
        if trainer.is_global_zero:
            start_wandb(loggers, run_dir, cfg.logger.get("mode"))
            print(where_line(run_dir, loggers), flush=True)
            print_run_summary(cfg)  # what it trains, against whom, for how long
        own_stream(dataset, cfg.seed, trainer)  # under DDP, each rank plays its own games
        rank = trainer.global_rank
        if resume_from is not None and cfg.checkpoint_buffer and replay is not None:
            if not load_replay(replay, resume_from.parent, step, rank=rank):
                print_note(f"note: no {resume_from.parent / replay_file(rank)}: resuming "
                           f"with an empty replay buffer")
        loader = DataLoader(dataset, batch_size=None, num_workers=0)
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader,
                    ckpt_path=str(resume_from) if resume_from else None)
        wall = time.perf_counter() - t0
        trainer.save_checkpoint(ckpt_dir / "last.ckpt")  # the state at the very end (all ranks)
        dataset.close()  # an actor process (play: process) stops here, its state saved
        if not trainer.is_global_zero:  # rank 0 evaluates, exports and reports
            return {"steps": trainer.global_step, "episodes": dataset.episodes,
                    "cycles": dataset.cycles, "wall_seconds": wall, "policy": None,
                    "interrupted": stop.requested, "objective": 0.0}

        net = module.policy_net()
        source = final_weights(cfg, trainer, module, eval_cb, average, stop.requested)
        policy_path = export_policy(net, run_dir / "policy.pt")
        print(f"policy.pt holds {source}", flush=True)
        summary = {
            "steps": trainer.global_step,
            "episodes": dataset.episodes,
            "cycles": dataset.cycles,
            "wall_seconds": wall,
            "train_seconds": eval_cb.train_seconds() if eval_cb else wall,
            "policy_source": source,
            "interrupted": stop.requested,
            # without a final Table I: the best evaluation's score during training
            "objective": kill_margin_score(eval_cb.best_table)
            if eval_cb and eval_cb.best_table else 0.0,
        }
        if cfg.eval.final_episodes > 0 and not stop.requested:
            table = evaluate(
                net.eval(), eval_opponents(cfg),
                episodes=cfg.eval.final_episodes, seed=cfg.eval.seed, max_cycles=cfg.eval.max_cycles,
                workers=cfg.eval.workers,
            )
            write_eval_json(table, run_dir / "eval.json")
            plot_table(table, run_dir / "eval.png")
            print(format_table(table), flush=True)
            summary["eval"] = table
            # the objective a sweep (and Optuna) maximises: the mean kill margin / 81
            summary["objective"] = kill_margin_score(table)
            summary["worst_win_rate"] = worst_win_rate(table)
            print(f"score (mean kill margin / 81 over the opponents): "
                  f"{summary['objective']:+.3f}", flush=True)
            final = {f"final/win_rate/{k}": r["win"] / r["episodes"] for k, r in table.items()}
            final.update({f"final/kill_margin/{k}": r["blue_kills"] - r["red_kills"]
                          for k, r in table.items()})  # kills per game, as eval/kill_margin
            final["final/min_win_rate"] = summary["worst_win_rate"]
            final["final/score"] = summary["objective"]
            for logger in loggers:
                logger.log_metrics(final, step=trainer.global_step)
        summary["policy"] = str(policy_path)
        return summary
    finally:
        if dataset is not None:
            dataset.close()
        for logger in loggers:
            close_logger(logger)


def train_seeds(cfg: DictConfig, run_dir: Path, extra_callbacks: list | None = None) -> dict:
    """``job_seeds: N``: train seeds ``seed``, ``seed + 1``, ... ``seed + N - 1`` one after
    another, each a whole run of its own in ``<run dir>/seed_<K>/`` (its policy.pt, eval.json
    and W&B run), and return the last run's summary with ``objective`` the mean of theirs.

    This is how an Optuna trial (``+sweep=optuna``, ``job_seeds: ${seeds}``) is valued over
    several seeds: the sweeper hands one job per trial, the job returns one number. Writes
    ``<run dir>/seeds.json`` (each seed's objective and their mean). A stopped run (Ctrl-C)
    ends the loop; the mean is over the seeds that finished."""
    n = int(cfg.job_seeds)
    first = int(cfg.seed)
    runs, summary = [], {}
    for seed in range(first, first + n):
        sub = copy.deepcopy(cfg)
        with open_dict(sub):
            sub.seed = seed
            sub.job_seeds = 1  # a single run (still named with its seed, run_name)
        summary = train(sub, run_dir / f"seed_{seed}", extra_callbacks)
        if summary.get("policy") is None:  # DDP ranks other than 0
            return summary
        if summary["interrupted"]:
            break
        runs.append({"seed": seed, "objective": summary["objective"],
                     "worst_win_rate": summary.get("worst_win_rate"),
                     "folder": f"seed_{seed}"})
    objectives = [r["objective"] for r in runs]
    mean = sum(objectives) / len(objectives) if objectives else 0.0
    (run_dir / "seeds.json").write_text(json.dumps(
        {"seeds": [r["seed"] for r in runs], "objective_mean": mean, "runs": runs}, indent=1))
    if runs:
        print(f"mean score over seeds {', '.join(str(r['seed']) for r in runs)}: {mean:+.3f}",
              flush=True)
    return {**summary, "objective": mean, "seed_runs": runs}

