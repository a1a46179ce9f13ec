"""The Trainer's callbacks: evaluation during training (periodic batched Table I, best-policy
tracking, early stop), the replay buffer's checkpoints, a clean stop on Ctrl-C, self-play
snapshots, the learning rate's decay over the end of the budget, and the average of the weights
over it."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from torch.optim.swa_utils import AveragedModel, get_swa_multi_avg_fn

from battle_rl.evaluation import Evaluator, evaluate, evaluate_as_red
from battle_rl.league.opponents import NetOpponent, Opponent
from battle_rl.league.sides import Mirrored


def _rival(net) -> Opponent:
    """A network (trained as blue) as the red team, through the mirror."""
    return NetOpponent(Mirrored(net), "the_other")


class EvalCallback(pl.Callback):
    """Every ``every_n_steps`` updates, play ``episodes`` games against each opponent.

    Logs ``eval/win_rate/<opponent>``, keeps the best policy weights (highest worst-case win
    rate, then the next worst and so on, then kill margin), appends to ``eval_history.jsonl`` and, with ``stop_win_rate``,
    stops training after ``patience`` evaluations in a row at or above it against every
    opponent. Time spent here is measured, so training time can be reported without it;
    ``max_train_seconds`` ends training once that much training time (evaluation excluded)
    has passed, so that runs with different evaluation costs get the same training budget.
    With ``video_every``, every that many evaluations a battle against ``video_opponent`` (the
    last opponent by default) is rendered and logged to W&B as a video.
    ``sides``: the learner plays blue (as trained), red (through the mirror; rows and metrics
    ``<opponent>_as_red``), or both: the best weights are then the best on both sides.
    ``rematch`` (at the end, ``eval.rematch_episodes``) has the candidates for ``policy.pt``
    (the best evaluation's weights, the last ones, their mean) play more, new games, and each
    other.
    Under DDP only rank 0 evaluates; its stop is every rank's (``SyncStop``).
    """

    def __init__(self, opponents: dict[str, Opponent], every_n_steps: int, episodes: int,
                 max_cycles: int, seed: int = 10_000, stop_win_rate: float | None = None,
                 patience: int = 1, n_envs: int = 15, workers: int = 1,
                 history_path: str | Path | None = None,
                 video_every: int = 0, video=None, video_opponent: str | None = None,
                 video_dir: str | Path = "videos", max_train_seconds: float | None = None,
                 sides: tuple[str, ...] = ("blue",)):
        self.opponents, self.every, self.episodes = opponents, every_n_steps, episodes
        self.sides = tuple(sides)
        self.seed, self.stop_win_rate, self.patience = seed, stop_win_rate, patience
        self.evaluator = Evaluator(max_cycles=max_cycles, n_envs=n_envs, workers=workers)
        self.history_path = Path(history_path) if history_path else None
        self.best_score: tuple | None = None
        self.best_state: dict | None = None
        self.best_step: int | None = None
        self.best_table: dict | None = None  # the best evaluation's table (its score: a sweep's)
        self.last_step: int | None = None  # the step of the latest evaluation
        self.eval_seconds = 0.0
        self.streak = 0
        self.max_train_seconds = max_train_seconds
        self._start = None
        # a battle video to W&B every `video_every` evaluations (settings: battle_rl.outputs.video)
        self.video_every, self.video, self.video_dir = video_every, video, Path(video_dir)
        self.video_opponent = video_opponent or list(opponents)[-1]
        self.evaluations = 0

    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()
        if self.video_every > 0 and self._wandb(trainer) is None and trainer.is_global_zero:
            print("note: eval.video_every logs videos to W&B only (logger=wandb): no videos "
                  "this run", flush=True)
            self.video_every = 0

    @staticmethod
    def _wandb(trainer):
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def train_seconds(self) -> float:
        """Wall time of training so far, evaluation excluded."""
        if self._start is None:
            return 0.0
        return time.perf_counter() - self._start - self.eval_seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0:
            self.run(trainer, pl_module)
        if self.max_train_seconds is not None and self.train_seconds() >= self.max_train_seconds:
            trainer.should_stop = True

    def play(self, net, episodes: int, seed: int, opponents: dict | None = None) -> dict:
        """One table: ``episodes`` games against each opponent (``self.opponents`` unless
        given) on each side of ``sides``."""
        opponents = self.opponents if opponents is None else opponents
        was_training = net.training
        net.eval()
        table = {} if "blue" not in self.sides else evaluate(
            net, opponents, episodes, seed, self.evaluator)
        if "red" in self.sides:  # the same games with the sides swapped, rows read as ours
            table.update({f"{name}_as_red": row for name, row in evaluate_as_red(
                net, opponents, episodes, seed, self.evaluator).items()})
        net.train(was_training)
        return table

    @staticmethod
    def score(table: dict) -> tuple:
        """The worst win rate first, then the next worst and so on (an opponent no weights
        beat yet must not hide progress against the others), then the kill margin."""
        win_rates = [row["win"] / row["episodes"] for row in table.values()]
        margin = sum(r["blue_kills"] - r["red_kills"] for r in table.values()) / len(table)
        return min(win_rates), tuple(sorted(win_rates)), margin

    def rematch(self, net, candidates: dict[str, dict], episodes: int) -> str:
        """Candidate weights (name: state dict) play it out: ``episodes`` new games each per
        opponent and side, and as many against every other candidate on each side (rows
        ``vs <name>``): five-game evaluations are noisy, an early lucky one must not outrank
        weights trained three times longer, and where every candidate beats the evaluation
        opponents every time, playing each other is what tells them apart. Returns the name of
        the best by ``score`` (the first of equals); ``net`` keeps its own weights."""
        t0 = time.perf_counter()
        seed = self.seed + 1_000_000  # games no evaluation during training played
        own = copy.deepcopy(net.state_dict())
        frozen = {}
        for name, state in candidates.items():
            net.load_state_dict(state)
            frozen[name] = copy.deepcopy(net).eval()
        tables = {}
        for name, state in candidates.items():
            net.load_state_dict(state)
            tables[name] = self.play(net, episodes, seed)
            for other, other_net in frozen.items():
                if other != name:
                    tables[name].update(self.play(net, episodes, seed,
                                                  {f"vs {other}": _rival(other_net)}))
        net.load_state_dict(own)
        self.eval_seconds += time.perf_counter() - t0
        best = max(tables, key=lambda name: self.score(tables[name]))  # max: the first of equals
        print(f"rematch, {episodes} games per opponent and side: "
              + "; ".join(f"{name}: {self._wins(t)}" for name, t in tables.items())
              + f": keeping {best}", flush=True)
        return best

    @staticmethod
    def _wins(table: dict) -> str:
        return ", ".join(f"{k} {r['win']}/{r['episodes']}" for k, r in table.items())

    def run(self, trainer, pl_module) -> dict:
        t0 = time.perf_counter()
        net = pl_module.policy_net()
        table = self.play(net, self.episodes, self.seed)
        self.evaluations += 1
        if self.video_every > 0 and self.evaluations % self.video_every == 0:
            self._log_video(trainer, net)
        win_rates = {name: row["win"] / row["episodes"] for name, row in table.items()}
        score = self.score(table)
        step = self.last_step = trainer.global_step
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step, self.best_table = score, step, table
            self.best_state = copy.deepcopy(net.state_dict())
        self.eval_seconds += time.perf_counter() - t0
        metrics = {f"eval/win_rate/{k}": v for k, v in win_rates.items()}
        metrics.update({f"eval/kill_margin/{k}": r["blue_kills"] - r["red_kills"]
                        for k, r in table.items()})
        metrics["eval/min_win_rate"] = score[0]
        metrics["eval/train_seconds"] = self.train_seconds()
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        pl_module.last_eval = win_rates
        print(f"eval at {step} updates ({self.train_seconds():.0f} s of training): "
              + self._wins(table), flush=True)
        if self.history_path:
            with self.history_path.open("a") as f:
                f.write(json.dumps({"step": step, **metrics, "table": table}) + "\n")
        if self.stop_win_rate is not None:
            self.streak = self.streak + 1 if score[0] >= self.stop_win_rate else 0
            if self.streak >= self.patience:
                trainer.should_stop = True
        return table

    def _log_video(self, trainer, net) -> None:
        """One battle against ``video_opponent``, written to ``video_dir`` and logged to W&B
        (its time counts as evaluation time)."""
        from battle_rl.outputs.video import record_battle

        step, name = trainer.global_step, self.video_opponent
        v = record_battle(net, self.opponents[name], self.video_dir / f"step-{step:06d}-{name}",
                          self.video, seed=self.seed)
        kills = v.score.kills
        self._wandb(trainer).log_video(
            f"eval/video/{name}", [str(v.paths["mp4"])], step=step,
            caption=[f"step {step}: blue {kills['blue']} - red {kills['red']} kills"])

class ReplayCheckpoint(pl.Callback):
    """Saves the replay buffer beside every checkpoint (``checkpoints/replay.npz``; under DDP
    every rank its own, ``replay_rank1.npz``, ...)."""

    def __init__(self, stream, ckpt_dir: str | Path):
        self.stream, self.ckpt_dir = stream, Path(ckpt_dir)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.stream.save_replay(self.ckpt_dir, step=trainer.global_step, rank=trainer.global_rank)


class GracefulStop(pl.Callback):
    """Ctrl-C (SIGINT) or SIGTERM asks training to stop after the current step, so the run
    saves its checkpoint and exports its policy; a second Ctrl-C interrupts at once. (The
    handler only takes note: the stop is set at the step's end, where DDP ranks agree on it.)"""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def on_train_start(self, trainer, pl_module):
        import signal

        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nstopping after this step (saving checkpoint and policy); "
                  "press Ctrl-C again to abort", flush=True)

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.requested:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        import signal

        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def on_exception(self, trainer, pl_module, exception):
        self.on_train_end(trainer, pl_module)


class SelfPlaySnapshots(pl.Callback):
    """Every ``every_n_steps`` updates, a frozen copy of the learner joins the self-play pool
    (``opponents.SelfPlayPool``); with ``export_dir`` it is also written there as TorchScript
    ``step-N.pt`` (the learner's side, like ``policy.pt``), for tournaments. Under DDP every
    rank adds the same weights to its own pool, and rank 0 writes the file."""

    def __init__(self, pool, every_n_steps: int, export_dir: str | Path | None = None):
        self.pool, self.every = pool, every_n_steps
        self.export_dir = Path(export_dir) if export_dir else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.every:
            return
        snap = self.pool.snapshot(step)
        actor = getattr(getattr(pl_module, "rollout", None), "actor", None)
        if actor is not None:  # play: process: the actor's pool, which plays, gets the same
            # weights; the games played against each snapshot are counted there
            for s, (score, games) in zip(self.pool.snapshots, actor.call("snapshot", step)):
                s.score, s.games = score, games
        if self.export_dir is not None and trainer.is_global_zero:
            from battle_rl.networks import export_policy

            export_policy(snap.net.net, self.export_dir / f"step-{step}.pt")
        if trainer.logger:
            played = [s for s in self.pool.snapshots if s.games]
            metrics = {"self_play/pool_size": len(self.pool.snapshots)}
            if played:  # the learner's mean score against the snapshots it has met
                metrics["self_play/learner_score"] = (sum(s.score for s in played)
                                                      / sum(s.games for s in played))
            trainer.logger.log_metrics(metrics, step=step)


class SyncStop(pl.Callback):
    """Under DDP, stop every rank after the same update as soon as any rank wants to (one
    all-reduce of one number per update), so that no rank waits for gradients that will never
    come. Add it after every callback that may set ``trainer.should_stop``."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.world_size == 1:
            return
        rollout = getattr(pl_module, "rollout", None)
        wants = trainer.should_stop or (rollout is not None and rollout.finished)
        trainer.should_stop = trainer.strategy.reduce_boolean_decision(wants, all=False)


def budget_fraction(trainer: pl.Trainer) -> float | None:
    """How much of the run's budget is spent, in [0, 1]: the larger of the updates against
    ``trainer.max_steps`` and the time against ``trainer.max_time``; None without either."""
    fractions = []
    if trainer.max_steps and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, pl.callbacks.Timer)), None)
    if timer is not None:
        elapsed, left = timer.time_elapsed("train"), timer.time_remaining("train")
        if left is not None and elapsed + left > 0:
            fractions.append(elapsed / (elapsed + left))
    return min(1.0, max(fractions)) if fractions else None


class LRDecay(pl.Callback):
    """Hold the learning rate, then lower it linearly over the end of the run's budget: from
    fraction ``after`` of it to ``to`` x the starting rate at its end (``hparams.lr_decay``).

    A run on a time budget ends wherever the budget runs out; a learner still taking full
    steps then leaves weights from the middle of a swing. Every optimiser and parameter group
    is scaled, so it works for every algorithm. The starting rate is kept in the group's
    ``initial_lr`` (saved with the optimiser), so a resumed run continues the same schedule
    (Lightning's Timer, which measures the time budget, is saved in the checkpoint too).
    """

    def __init__(self, after: float, to: float):
        self.after, self.to = after, to

    def scale(self, fraction: float) -> float:
        if fraction <= self.after:
            return 1.0
        return 1.0 - (1.0 - self.to) * (fraction - self.after) / (1.0 - self.after)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        scale = self.scale(budget_fraction(trainer) or 0.0)
        if trainer.world_size > 1:  # each rank's clock differs a little: one rate for all
            scale = trainer.strategy.broadcast(scale)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale
        if (trainer.global_step + 1) % trainer.log_every_n_steps == 0:
            pl_module.log("train/lr_scale", scale, on_step=True, on_epoch=False, batch_size=1)


class WeightAverage(pl.Callback):
    """The run's final policy is the mean of its policy network's weights over the end of the
    budget, from fraction ``after`` of it (``hparams.weight_average``): stochastic weight
    averaging (Izmailov et al., 2018), with torch's ``AveragedModel``, one update per step.

    Why: a self-play learner's greedy policy swings from update to update; the weights it
    happens to end on can be in a swing (a 3-minute run's last weights lost 29 of 30 games to the
    scripted agent, the mean of its last three snapshots none: docs/benchmarks.md, "Weight
    averaging"). At the end of training the mean replaces the policy network's weights, as
    Lightning's own ``WeightAveraging`` does, so everything after (``policy.pt``, the final
    Table I) sees the averaged weights, unless the rematch (``eval.rematch_episodes``) finds
    the last weights, kept as ``last_state``, better. The mean so far is saved with every checkpoint.
    (Lightning's callback averages the whole LightningModule, whose rollout holds the game and
    the replay buffer: this one averages the policy network only.)
    """

    def __init__(self, after: float):
        self.after = after
        self.average: AveragedModel | None = None
        self._restored: dict | None = None  # from a checkpoint, until the network is at hand
        self.last_state: dict | None = None  # the last weights, once the mean replaced them

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (budget_fraction(trainer) or 0.0) < self.after:
            return
        net = pl_module.policy_net()
        if self.average is None:
            # the foreach mean (one lerp over every tensor): torch picks it on GPUs only; on the
            # CPU its default is a loop of small ops per tensor, 0.6 ms a step
            self.average = AveragedModel(net, use_buffers=True,
                                         multi_avg_fn=get_swa_multi_avg_fn())
            if self._restored is not None:
                self.average.load_state_dict(self._restored)
        self.average.update_parameters(net)

    def on_train_end(self, trainer, pl_module):
        if self.average is not None:
            net = pl_module.policy_net()
            self.last_state = copy.deepcopy(net.state_dict())  # a candidate in the rematch
            net.load_state_dict(self.average.module.state_dict())

    def averaged(self) -> int:
        """How many updates' weights the mean holds."""
        return int(self.average.n_averaged) if self.average is not None else 0

    def state_dict(self) -> dict:
        return {} if self.average is None else {"average": self.average.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict.get("average")
