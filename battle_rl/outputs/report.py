"""Offline report of a Hydra sweep: ``python -m battle_rl.outputs.report <sweep dir>``.

Reads only what battle-rl itself wrote into the sweep folder (no W&B server, none of W&B's
files): for every job folder, the overrides (``.hydra/overrides.yaml``), the final Table I
(``eval.json``), the evaluations during training (``eval_history.jsonl``), the training metrics
(``csv/metrics.csv``, written beside W&B too) and the W&B run's id and group
(``wandb_run.json``). Writes into the sweep folder:

- ``report.md``: one row per job: the swept values, the final win rate against each opponent,
  the worst of them (the objective a sweep maximises), the time and updates until the
  evaluation during training first reached ``--target`` against every opponent, the final
  evaluation reward, the last training episode reward and the W&B run id; the common
  overrides and the W&B group above it;
- ``report.csv``: the same table, for spreadsheets;
- ``win_rate.png``: the win rate against each opponent over training, one line per job;
- ``reward.png``: the evaluation reward (and the training episode reward, where logged) over
  training, one line per job;
- ``final_vs_<key>.png``: for each swept key, the final worst-case win rate and the final
  reward against the key's value (one point per job, the mean per value as a line).

Each PNG names the jobs it draws in its ``Description`` metadata.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from battle_rl.outputs.loggers import WANDB_RUN_FILE

MISSING = "—"


# ---------------------------------------------------------------------------- reading


def parse_override(text: str) -> tuple[str, object]:
    """``hparams.tau=0.05`` -> ("hparams.tau", 0.05); ``+sweep=grid`` -> ("sweep", "grid")."""
    key, _, value = text.partition("=")
    key = key.lstrip("+~")
    value = re.sub(r"\\(.)", r"\1", value)  # sweepers escape ':', ',', '=' ... in values
    for kind in (int, float):  # numbers as numbers (for plots); anything else as written
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False, "null": None}.get(value.lower(), value)


def _read_csv_metrics(path: Path) -> list[dict]:
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            out = {}
            for k, v in row.items():
                if v in ("", None):
                    continue
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            rows.append(out)
    return rows


@dataclass
class Run:
    """One job of a sweep, as found on disk."""

    path: Path
    name: str
    num: int | None
    overrides: dict
    eval: dict | None = None
    history: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)  # training metrics, one dict per step
    metrics_source: str = ""
    wandb_id: str = ""
    wandb_group: str = ""

    def final_win_rates(self) -> dict[str, float]:
        if not self.eval:
            return {}
        return {k: r["win"] / r["episodes"] for k, r in self.eval.items() if r.get("episodes")}

    def objective(self) -> float | None:
        rates = self.final_win_rates()
        return min(rates.values()) if rates else None

    def final_reward(self) -> float | None:
        """Mean blue reward per agent of the final evaluation, over the opponents."""
        if not self.eval:
            return None
        vals = [r["blue_reward"] for r in self.eval.values() if "blue_reward" in r]
        return sum(vals) / len(vals) if vals else None

    def train_reward(self) -> float | None:
        """The last training episode reward per blue agent that was logged."""
        vals = [m["rollout/blue_reward"] for m in self.metrics if "rollout/blue_reward" in m]
        return vals[-1] if vals else None

    def time_to_win(self, target: float) -> tuple[float, int] | None:
        """(training seconds, updates) when every opponent was first beaten at ``target``."""
        for rec in self.history:
            if rec.get("eval/min_win_rate", -1) >= target - 1e-9:
                return rec.get("eval/train_seconds", math.nan), rec.get("step", -1)
        return None


def _job_number(path: Path, sweep_dir: Path) -> int | None:
    m = re.match(r"(\d+)(_|$)", path.relative_to(sweep_dir).parts[0]) if path != sweep_dir else None
    return int(m.group(1)) if m else None


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder under the sweep folder (those with ``.hydra/overrides.yaml``)."""
    found = []
    for f in sweep_dir.rglob("overrides.yaml"):
        if f.parent.name != ".hydra" or "wandb" in f.relative_to(sweep_dir).parts:
            continue
        found.append(f.parent.parent)
    return sorted(found, key=lambda p: (_job_number(p, sweep_dir) is None,
                                        _job_number(p, sweep_dir) or 0, str(p)))


def load_run(path: Path, sweep_dir: Path) -> Run:
    overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    run = Run(path=path, name=str(path.relative_to(sweep_dir)) if path != sweep_dir else ".",
              num=_job_number(path, sweep_dir), overrides=dict(parse_override(o) for o in overrides))
    if (path / "eval.json").is_file():
        run.eval = json.loads((path / "eval.json").read_text())
    if (path / "eval_history.jsonl").is_file():
        for line in (path / "eval_history.jsonl").read_text().splitlines():
            if line.strip():
                try:
                    run.history.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut short by a killed job
    csvs = sorted(p for p in path.rglob("metrics.csv") if "wandb" not in p.parts)
    if csvs:
        run.metrics, run.metrics_source = _read_csv_metrics(csvs[0]), "csv"
    if (path / WANDB_RUN_FILE).is_file():  # written by battle_rl.outputs.loggers as the run starts
        try:
            wb = json.loads((path / WANDB_RUN_FILE).read_text())
            run.wandb_id, run.wandb_group = wb.get("id", ""), wb.get("group") or ""
        except json.JSONDecodeError:
            pass  # cut short by a killed job
    return run


def load_sweep(sweep_dir: Path) -> list[Run]:
    return [load_run(p, sweep_dir) for p in find_run_dirs(sweep_dir)]


# ---------------------------------------------------------------------------- table


def split_overrides(runs: list[Run]) -> tuple[list[str], dict]:
    """(keys whose values differ between jobs, in first-seen order; overrides all jobs share)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys]
    swept = [k for k in keys
             if len({json.dumps(r.overrides.get(k, None), default=str) for r in runs}) > 1]
    common = {k: runs[0].overrides[k] for k in keys if k not in swept and k in runs[0].overrides}
    return swept, common


def short_keys(keys: list[str]) -> dict[str, str]:
    """Last component of each key (``hparams.tau`` -> ``tau``), longer where two would clash."""
    out = {}
    for k in keys:
        parts = k.split(".")
        n = 1
        while n < len(parts) and sum(
                1 for o in keys if o.split(".")[-n:] == parts[-n:]) > 1:
            n += 1
        out[k] = ".".join(parts[-n:])
    return out


def run_label(run: Run, swept: list[str], short: dict[str, str]) -> str:
    num = f"#{run.num}" if run.num is not None else run.name
    vals = ",".join(f"{short[k]}={run.overrides.get(k, MISSING)}" for k in swept)
    return f"{num} {vals}".strip()


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def opponents_of(runs: list[Run]) -> list[str]:
    seen: list[str] = []
    for r in runs:
        for k in (r.eval or {}):
            if k not in seen:
                seen.append(k)
        for rec in r.history:
            for k in rec:
                if k.startswith("eval/win_rate/") and k[14:] not in seen:
                    seen.append(k[14:])
    return seen


def table_rows(runs: list[Run], swept: list[str], target: float) -> tuple[list[str], list[list]]:
    opps = opponents_of(runs)
    header = ["job", *swept, *[f"win {o}" for o in opps], "min win",
              f"time to {target:g} (s)", f"updates to {target:g}", "final reward",
              "train reward", "W&B run"]
    rows = []
    for r in runs:
        rates = r.final_win_rates()
        ttw = r.time_to_win(target)
        rows.append([
            r.num if r.num is not None else r.name,
            *[r.overrides.get(k, MISSING) for k in swept],
            *[rates.get(o) for o in opps],
            r.objective(),
            ttw[0] if ttw else None,
            ttw[1] if ttw else None,
            r.final_reward(),
            r.train_reward(),
            r.wandb_id or MISSING,
        ])
    return header, rows


def write_markdown(sweep_dir: Path, runs: list[Run], swept: list[str], common: dict,
                   target: float, plots: list[str]) -> Path:
    header, rows = table_rows(runs, swept, target)
    lines = [f"# Sweep report: `{sweep_dir}`", ""]
    lines.append(f"{len(runs)} jobs; {sum(r.eval is not None for r in runs)} with a final "
                 f"evaluation (`eval.json`).")
    groups = sorted({r.wandb_group for r in runs if r.wandb_group})
    if groups:
        lines.append(f"W&B group: {', '.join(f'`{g}`' for g in groups)} "
                     f"(upload: `wandb sync {sweep_dir}/*/wandb/offline-run-*`).")
    if common:
        lines.append("Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()))
    scored = [r for r in runs if r.objective() is not None]
    if scored:
        best = max(scored, key=lambda r: (r.objective(), r.final_reward() or -math.inf))
        lines.append(f"Best job (worst-case final win rate, then reward): **{best.name}** "
                     f"(min win {_fmt(best.objective())}).")
    opt = sweep_dir / "optimization_results.yaml"
    if opt.is_file():
        res = yaml.safe_load(opt.read_text()) or {}
        lines.append(f"Optuna best: value {_fmt(res.get('best_value'))}, params "
                     f"`{json.dumps(res.get('best_params', {}), default=str)}`.")
    lines += ["", f"Time / updates to {target:g}: training seconds (evaluation excluded) and "
              f"updates until the evaluation during training first reached a win rate of "
              f"{target:g} against every opponent ({MISSING}: not reached). Final reward: "
              f"blue reward per agent in the final evaluation (the game's rewards), mean over "
              f"opponents; train reward: the last training episode (shaped rewards).", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_fmt(c) for c in row) + " |")
    lines.append("")
    lines.append("Jobs:")
    lines += [f"- {r.num if r.num is not None else '-'}: `{r.name}`" for r in runs]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    out = sweep_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    with (sweep_dir / "report.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([["" if c is None else c for c in row] for row in rows])
    return out


# ---------------------------------------------------------------------------- plots


def _save(fig, path: Path, labels: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Description": "runs: " + json.dumps(labels)})


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_training(sweep_dir: Path, runs: list[Run], labels: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    opps = opponents_of(runs) or ["(none)"]
    fig, axes = plt.subplots(1, len(opps), figsize=(5 * len(opps), 4), squeeze=False)
    for ax, opp in zip(axes[0], opps):
        for r, label in zip(runs, labels):
            pts = [(h["step"], h[f"eval/win_rate/{opp}"]) for h in r.history
                   if f"eval/win_rate/{opp}" in h and "step" in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
        ax.set(title=f"win rate vs {opp}", xlabel="updates", ylabel="win rate", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    _save(fig, sweep_dir / "win_rate.png", labels)
    plt.close(fig)
    written.append("win_rate.png")

    have_train = any(r.train_reward() is not None for r in runs)
    fig, axes = plt.subplots(1, 2 if have_train else 1, figsize=(10 if have_train else 5.5, 4),
                             squeeze=False)
    ax = axes[0][0]
    for r, label in zip(runs, labels):
        pts = [(h["step"], sum(t["blue_reward"] for t in h["table"].values()) / len(h["table"]))
               for h in r.history if h.get("table") and "step" in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    ax.set(title="evaluation reward (blue, per agent)", xlabel="updates", ylabel="reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if have_train:
        ax = axes[0][1]
        for r, label in zip(runs, labels):
            pts = []  # the metric repeats the last finished episode until the next one ends
            for i, m in enumerate(r.metrics):
                key = (m.get("rollout/episodes"), m.get("rollout/blue_reward"))
                if key[1] is not None and (not pts or key != pts[-1][2]):
                    pts.append((m.get("step", i), key[1], key))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
        ax.set(title="training episode reward (blue, per agent)", xlabel="updates")
        ax.grid(alpha=0.3)
    _save(fig, sweep_dir / "reward.png", labels)
    plt.close(fig)
    written.append("reward.png")
    return written


def plot_final_vs(sweep_dir: Path, runs: list[Run], labels: list[str], swept: list[str],
                  short: dict[str, str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    metrics = [("min final win rate", lambda r: r.objective()),
               ("final reward", lambda r: r.final_reward())]
    for key in swept:
        values = [r.overrides.get(key) for r in runs]
        present = [v for v in values if v is not None]
        numeric = _numeric(present)
        order = sorted(set(present)) if numeric else list(dict.fromkeys(map(str, present)))
        fig, axes = plt.subplots(1, len(metrics), figsize=(10, 4), squeeze=False)
        for ax, (title, fn) in zip(axes[0], metrics):
            xs, ys, used = [], [], []
            for r, v, label in zip(runs, values, labels):
                y = fn(r)
                if v is None or y is None:
                    continue
                xs.append(v if numeric else order.index(str(v)))
                ys.append(y)
                used.append(label)
            ax.scatter(xs, ys, alpha=0.7)
            means = []
            for i, v in enumerate(order):
                x = v if numeric else i
                pts = [y for xx, y in zip(xs, ys) if xx == x]
                if pts:
                    means.append((x, sum(pts) / len(pts)))
            if means:
                ax.plot([m[0] for m in means], [m[1] for m in means], "-", alpha=0.6,
                        label="mean over the other keys")
            if numeric and len(order) > 2 and min(order) > 0 and max(order) / min(order) > 20:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(order)), order, rotation=30)
            ax.set(title=f"{title} vs {short[key]}", xlabel=key, ylabel=title)
            ax.grid(alpha=0.3)
            if means:
                ax.legend(fontsize=7)
        name = f"final_vs_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.png"
        _save(fig, sweep_dir / name, [lb for lb, v in zip(labels, values) if v is not None])
        plt.close(fig)
        written.append(name)
    return written


# ---------------------------------------------------------------------------- entry point


def write_report(sweep_dir: str | Path, target: float = 1.0, plots: bool = True) -> dict:
    """Write ``report.md``, ``report.csv`` and the plots into ``sweep_dir``; return a summary."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    runs = load_sweep(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no job folders (with .hydra/overrides.yaml) in {sweep_dir}")
    swept, common = split_overrides(runs)
    short = short_keys(swept)
    labels = [run_label(r, swept, short) for r in runs]
    written = []
    if plots:
        written += plot_training(sweep_dir, runs, labels)
        written += plot_final_vs(sweep_dir, runs, labels, swept, short)
    md = write_markdown(sweep_dir, runs, swept, common, target, written)
    return {"runs": runs, "labels": labels, "swept": swept, "common": common,
            "report": md, "plots": [sweep_dir / p for p in written]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m battle_rl.outputs.report",
        description="Offline report of a Hydra sweep folder (multirun/...): report.md, "
                    "report.csv and PNG plots, written into that folder.")
    parser.add_argument("sweep_dir", help="the sweep's folder (hydra.sweep.dir)")
    parser.add_argument("--target", type=float, default=1.0,
                        help="win rate against every opponent that counts as 'won' for the "
                             "time-to-win column (default: 1.0)")
    parser.add_argument("--no-plots", action="store_true", help="the table only")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.sweep_dir, target=args.target, plots=not args.no_plots)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out["report"].read_text(), end="")
    for p in out["plots"]:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
