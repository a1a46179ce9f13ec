"""The terminal during training: a few lines on what the run does (``run_summary``), the
composed configuration as a tree (``print_config=true``), and a one-line progress bar with live
figures (updates, time, updates per second, epsilon, the last evaluation). All of it fits an
80-column terminal."""

from __future__ import annotations

import textwrap
import time

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar, Timer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Column
from rich.tree import Tree


def config_tree(cfg: DictConfig) -> Tree:
    """The resolved configuration: one branch per group, top-level keys first."""
    tree = Tree("[bold]config[/]", guide_style="dim")

    def add(branch: Tree, node: dict) -> None:
        flat = {k: v for k, v in node.items() if not isinstance(v, dict)}
        for key, value in flat.items():
            branch.add(f"{escape(str(key))}: [cyan]{escape(repr(value))}[/]")
        for key, value in node.items():
            if isinstance(value, dict):
                add(branch.add(f"[bold]{escape(str(key))}[/]"), value)

    add(tree, OmegaConf.to_container(cfg, resolve=True))
    return tree


def print_config(cfg: DictConfig) -> None:
    Console().print(config_tree(cfg))


WIDTH = 80  # the terminal the first screen is written for


def _budget(trainer_cfg) -> str:
    """``0:02:00``, ``20000 updates`` or both, from ``trainer.max_time`` and ``max_steps``."""
    parts = []
    max_time = trainer_cfg.get("max_time")
    if max_time:
        try:
            if isinstance(max_time, str):  # DD:HH:MM:SS
                days, hours, minutes, seconds = (int(x) for x in max_time.split(":"))
            else:  # a dict of timedelta's keys
                days, hours, minutes, seconds = (int(max_time.get(k, 0)) for k in
                                                 ("days", "hours", "minutes", "seconds"))
            parts.append(_clock(((days * 24 + hours) * 60 + minutes) * 60 + seconds))
        except (ValueError, AttributeError):
            parts.append(str(max_time))
    if (trainer_cfg.get("max_steps") or -1) > 0:
        parts.append(f"{trainer_cfg.max_steps} updates")
    if not parts:
        return "until stopped"
    return f"for {parts[0]}" + (f" (or {parts[1]}, the first to come)" if len(parts) > 1 else "")


def _games(n: int) -> str:
    return f"{n} game" + ("s" if n != 1 else "")


def _weight(w) -> str:
    return f"{w:g}" if isinstance(w, (int, float)) else str(w)


def run_summary(cfg: DictConfig, width: int = WIDTH) -> list[str]:
    """What the run does, in a few lines of at most ``width`` columns: the algorithm and its
    budget, the opponents it trains against (with their weights) and is evaluated against,
    and the flag that shows the whole configuration."""
    lines = [f"{cfg.algo.get('name', 'train')} {_budget(cfg.trainer)}, seed {cfg.seed}, "
             f"on {cfg.trainer.get('accelerator', 'cpu')}"]
    weights = {n: w for n, w in cfg.opponent.weights.items() if w > 0}
    lines.append("opponents: " + ", ".join(f"{n} {_weight(w)}" for n, w in weights.items()))
    ev, evaluations = cfg.eval, []
    if ev.get("every_n_steps", 0) > 0:
        evaluations.append(f"{_games(ev.episodes)} every {ev.every_n_steps} updates")
    if ev.get("final_episodes", 0) > 0:
        evaluations.append(f"{_games(ev.final_episodes)} each at the end (Table I)")
    if evaluations:
        lines.append(f"evaluation: {' and '.join(evaluations)} against "
                     + ", ".join(ev.opponents))
    if not cfg.get("print_config", False):
        lines.append("full configuration: print_config=true, "
                     "or python train.py --cfg job (no run)")
    return [part for line in lines for part in wrap(line, width)]


def print_run_summary(cfg: DictConfig) -> None:
    print("\n".join(run_summary(cfg)), flush=True)


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """One line of the first screen in lines of at most ``width``, continued indented."""
    return textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False)


def print_note(text: str, width: int = WIDTH) -> None:
    """A note on the first screen (course opponents left out, emulated bfloat16), wrapped."""
    print("\n".join(wrap(text, width)), flush=True)


class BattleProgressBar(ProgressBar):
    """One line that fits an 80-column terminal, refreshed a few times a second (the machine
    has few cores to spare for the game and the updates):

        ━━━━━━━━━━━━  1250/20000  0:00:12/0:05:00  104 upd/s  eps 0.52  win 80% final

    The bar shows how far training is toward whichever limit comes first (``max_steps`` or the
    ``max_time`` budget); then the updates, the time (and budget), updates per second,
    epsilon, and the worst win rate of the last evaluation, with its opponent. A narrower
    terminal cuts the line short rather than wrapping it."""

    def __init__(self, refresh_rate: int = 4, rate_window: float = 1.0,
                 console: Console | None = None):
        super().__init__()
        self.refresh_rate, self.rate_window = refresh_rate, rate_window
        self.console = console  # the terminal's (rich's Console()) unless given
        self._enabled = True
        self.progress: Progress | None = None
        self._mark: tuple[float, int] | None = None  # (time, global step) rates start from
        self._start: tuple[float, int] | None = None  # the same at the start of training
        self._rate = ""
        self._last_eval: dict | None = None  # the win rates shown, set by the EvalCallback

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module):
        self._start = (time.perf_counter(), trainer.global_step)
        if not self._enabled:
            return
        line = Column(no_wrap=True, overflow="ellipsis")
        self.progress = Progress(BarColumn(bar_width=12),
                                 TextColumn("{task.description}", markup=False, table_column=line),
                                 refresh_per_second=self.refresh_rate,
                                 console=self.console or Console())
        self.task = self.progress.add_task("", total=1.0)
        self.progress.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.progress is not None:
            done, status = self.status(trainer, pl_module)
            self.progress.update(self.task, completed=done, description=status)

    def on_train_end(self, trainer, pl_module):
        if self.progress is not None:  # the line left on screen: the whole run's rate
            done, status = self.status(trainer, pl_module, final=True)
            self.progress.update(self.task, completed=done, description=status)
        self._stop()

    def on_exception(self, trainer, pl_module, exception):
        self._stop()

    def teardown(self, trainer, pl_module, stage):
        self._stop()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def status(self, trainer, pl_module, final: bool = False) -> tuple[float, str]:
        """(fraction of the run done, the figures after the bar). The rate: updates per second
        over the last ``rate_window`` seconds of training; ``final``: over the whole run (this
        session's updates over its wall time, evaluations included, as the clock shows)."""
        step, max_steps = trainer.global_step, trainer.max_steps
        parts, done = [f"{step}/{max_steps}" if max_steps > 0 else f"{step} updates"], 0.0
        if max_steps > 0:
            done = step / max_steps
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer.time_elapsed("train") is not None:
            elapsed, left = timer.time_elapsed("train"), timer.time_remaining("train")
            parts.append(f"{_clock(elapsed)}/{_clock(elapsed + left)}")
            done = max(done, elapsed / max(elapsed + left, 1e-9))
        evals = getattr(pl_module, "last_eval", None)
        if evals is not self._last_eval:  # an evaluation paused training: measure anew
            self._last_eval, self._mark = evals, None
        parts.append(self._mean_rate(step) if final else self._measure_rate(step))
        rollout = getattr(pl_module, "rollout", None)
        if getattr(rollout, "epsilon", None) is not None:  # on-policy learners have none
            parts.append(f"eps {rollout.epsilon:.2f}")
        if evals:
            worst = min(evals, key=evals.get)
            parts.append(f"win {evals[worst]:.0%} {worst}")
        return min(done, 1.0), "  ".join(p for p in parts if p)

    def _measure_rate(self, step: int) -> str:
        """Updates per second over the last ``rate_window`` seconds (called every batch)."""
        now = time.perf_counter()
        if self._mark is None:
            self._mark = (now, step)
        t0, step0 = self._mark
        if step > step0:  # shown from the second update on, even in a run shorter than a window
            self._rate = _rate(step - step0, now - t0)
        if now - t0 >= self.rate_window:
            self._mark = (now, step)
        return self._rate

    def _mean_rate(self, step: int) -> str:
        if self._start is None:
            return self._rate
        t0, step0 = self._start
        seconds = time.perf_counter() - t0
        return _rate(step - step0, seconds) if step > step0 and seconds > 0 else self._rate


def _rate(updates: int, seconds: float) -> str:
    rate = updates / seconds
    return f"{rate:.0f} upd/s" if rate >= 10 else f"{rate:.1f} upd/s"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
