"""Plots of a run, from its local files: ``python -m battle_rl.outputs.plot RUN_DIR``.

Training curves come from ``csv/metrics.csv`` (written by the CSV logger, and kept beside W&B
by the training task) and ``eval_history.jsonl`` (every evaluation during training); the
Table I chart from ``eval.json``. Matplotlib's object API (no pyplot: no display, no global
state), imported on first use: evaluation imports this module and need not pay for it.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

# (metric in metrics.csv, file name, title, y label)
CURVES = (
    ("train/td_loss", "td_loss", "TD loss (Huber)", "loss"),
    ("train/q_mean", "q_mean", "Mean Q(s, a) of the minibatch", "Q"),
    ("train/epsilon", "epsilon", "Exploration epsilon", "epsilon"),
    ("rollout/blue_reward", "episode_reward", "Episode reward per blue agent (training reward)",
     "reward"),
)
WIN_RATE = "eval/win_rate/"
VERDICT_COLORS = {"win": "#3a7d44", "draw": "#9e9e9e", "lose": "#c0392b"}
TEAM_COLORS = {"blue": "#4040c0", "red": "#c04040"}  # MAgent2's team colours

Series = dict[str, tuple[list[float], list[float]]]  # metric -> (steps, values)


class NoMetrics(Exception):
    """The folder has no metrics to plot; the message is the one line shown to the user."""


def read_metrics(run_dir: str | Path) -> Series:
    """Every metric of the run as (steps, values), from metrics.csv and eval_history.jsonl."""
    run_dir = Path(run_dir)
    series: Series = {}

    def add(key, step, value):
        steps, values = series.setdefault(key, ([], []))
        steps.append(float(step))
        values.append(float(value))

    metrics_csv = run_dir / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        # Lightning writes the last logged values again at every step until the module logs
        # anew: a row identical to the last one with the same columns is such a repeat
        last: dict[frozenset, tuple] = {}
        with metrics_csv.open(newline="") as f:
            for row in csv.DictReader(f):
                values = {k: v for k, v in row.items()
                          if k not in ("step", "epoch") and v not in ("", None)}
                columns, logged = frozenset(values), tuple(sorted(values.items()))
                if last.get(columns) == logged:
                    continue
                last[columns] = logged
                for key, value in values.items():
                    # rollout/* describe the last finished episode: one point per episode
                    if not (key.startswith("rollout/") and key in series
                            and series[key][1][-1] == float(value)):
                        add(key, row["step"], value)
    history = run_dir / "eval_history.jsonl"
    if history.is_file():
        # the evaluation record of the run, whatever the logger: it wins over the CSV's copy
        for key in [k for k in series if k.startswith(WIN_RATE)]:
            del series[key]
        for line in history.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                for key, value in record.items():
                    if key.startswith(WIN_RATE):
                        add(key, record["step"], value)
    if not series:
        raise NoMetrics(f"no metrics in {run_dir}: expected csv/metrics.csv (logger=csv, or "
                        f"the copy kept beside W&B) or eval_history.jsonl")
    return series


def _draw(ax, series: Series, key: str, title: str, ylabel: str) -> None:
    ax.set(title=title, xlabel="update step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if key != WIN_RATE:
        ax.plot(*series[key], lw=1.2, marker="." if key.startswith("rollout/") else None)
        return
    keys = sorted(k for k in series if k.startswith(WIN_RATE))
    for i, name in enumerate(keys):  # shrinking markers: equal rates stay visible
        ax.plot(*series[name], marker="osD^v"[i % 5], markersize=9 - 2 * (i % 3), alpha=0.85,
                label=name[len(WIN_RATE):])
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="lower right", fontsize="small")


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """One PNG per curve there is data for, and ``overview.png`` with them all, in
    ``RUN_DIR/plots`` (or ``out_dir``); returns the paths written."""
    series = read_metrics(run_dir)
    out = Path(out_dir) if out_dir else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    panels = [(key, name, title, ylabel) for key, name, title, ylabel in CURVES if key in series]
    if any(k.startswith(WIN_RATE) for k in series):
        panels.append((WIN_RATE, "win_rate", "Win rate in evaluations during training",
                       "win rate"))
    if not panels:
        raise NoMetrics(f"no training curves in {run_dir}: none of "
                        f"{', '.join(c[0] for c in CURVES)} or {WIN_RATE}*")
    written = []
    for key, name, title, ylabel in panels:
        fig = _figure((6.4, 3.6))
        _draw(fig.add_subplot(), series, key, title, ylabel)
        written.append(_save(fig, out / f"{name}.png"))
    rows = -(-len(panels) // 2)
    fig = _figure((11, 3.2 * rows))
    for i, (key, _, title, ylabel) in enumerate(panels):
        _draw(fig.add_subplot(rows, 2, i + 1), series, key, title, ylabel)
    written.append(_save(fig, out / "overview.png"))
    return written


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def plot_table(table: dict, path: str | Path) -> Path:
    """Table I as bars: wins / draws / losses per opponent, and the mean kills of each team."""
    names = list(table)
    x = range(len(names))
    fig = _figure((9, 3.6))
    games, kills = fig.subplots(1, 2)
    width = 0.27
    for i, verdict in enumerate(VERDICT_COLORS):
        counts = [table[n][verdict] for n in names]
        bars = games.bar([p + (i - 1) * width for p in x], counts, width,
                         label=verdict, color=VERDICT_COLORS[verdict])
        games.bar_label(bars, fontsize="small")
    n_games = max(table[n]["episodes"] for n in names)
    games.set(title=f"Table I: blue vs each opponent ({n_games} games)", ylabel="games",
              xticks=list(x), xticklabels=names, ylim=(0, n_games * 1.15))
    games.legend(fontsize="small")
    for i, team in enumerate(("blue", "red")):
        bars = kills.bar([p + (i - 0.5) * width for p in x],
                         [table[n][f"{team}_kills"] for n in names], width,
                         label=f"{team} kills", color=TEAM_COLORS[team])
        kills.bar_label(bars, fmt="%.1f", fontsize="small")
    kills.set(title="Mean kills per game (81 agents a side)", ylabel="kills", xticks=list(x),
              xticklabels=names, ylim=(0, 81 * 1.15))
    kills.legend(fontsize="small")
    return _save(fig, Path(path))


def main(argv: list[str] | None = None, prog: str = "python -m battle_rl.outputs.plot") -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog, description="Plots of a run from its local files: the training curves "
        "(csv/metrics.csv, eval_history.jsonl) as RUN_DIR/plots/*.png, and the Table I chart "
        "(eval.json) as RUN_DIR/eval.png.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's folder")
    run_dir = Path(p.parse_args(argv).run_dir)
    if not run_dir.is_dir():
        print(f"error: {run_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        paths = plot_run(run_dir)
    except NoMetrics as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = run_dir / "eval.json"
    if table.is_file():
        paths.append(plot_table(json.loads(table.read_text()), run_dir / "eval.png"))
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
