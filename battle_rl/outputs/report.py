"""Offline report of a Hydra sweep: ``python -m battle_rl.outputs.report <sweep dir>``.

Reads only what battle-rl itself wrote into the sweep folder (no W&B server, none of W&B's
files): for every job folder, the overrides (``.hydra/overrides.yaml``), the final Table I
(``eval.json``), the evaluations during training (``eval_history.jsonl``), the training metrics
(``csv/metrics.csv``, written beside W&B too) and the W&B run's id and group
(``wandb_run.json``). A job that trained several seeds in turn (``job_seeds``, Optuna's trials)
counts as one run per seed (its ``seed_<K>/`` folders).

Jobs that differ only in the seed are one **configuration**. The figure compared is each run's
score (:func:`battle_rl.score.kill_margin_score`: the mean over the final evaluation's opponents
of the kill margin per game / 81, in [-1, 1]). Writes into the sweep folder:

- ``report.md``: the configurations ranked by their mean score, each with its number of seeds,
  a 95% confidence interval of the mean (a percentile bootstrap over the seeds, scipy), the
  interquartile mean (IQM) of the seed x opponent kill margins, the probability that the best
  configuration beats it (a seed of the best against a seed of this one), whether their
  intervals are apart, the mean worst-case win rate and the mean win rate per opponent; which
  differences the intervals tell apart; then one row per job (seed);
- ``report.csv``: one row per configuration (``n_seeds``, ``objective_mean``,
  ``objective_ci_low``, ``objective_ci_high``, ...); ``report_jobs.csv``: one row per job;
- ``final_vs_<key>.png``: for each swept key (the seed aside), each configuration's mean score
  and mean worst-case win rate with their 95% intervals, against the key's value;
- ``learning_curve.png``: the score and the win rate per opponent of the evaluations during
  training, per configuration the mean over its seeds with the seeds' range as a band; left
  out, with a line in ``report.md`` saying why, where no job evaluated during training;
- ``train_reward.png``: the training episode reward (where logged), the same way.

Each PNG names the configurations it draws in its ``Description`` metadata.
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

import numpy as np
import yaml

from battle_rl.outputs.loggers import WANDB_RUN_FILE
from battle_rl.score import (RUN_ONLY_KEYS, SEED_KEYS, TEAM_SIZE, config_id, kill_margin_score,
                             kill_margins, worst_win_rate)

MISSING = "—"
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


# ---------------------------------------------------------------------------- statistics


def interval(values, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
             seed: int = 0) -> tuple[float | None, float | None]:
    """A ``confidence`` interval of the mean of ``values`` (one per seed): the percentile
    bootstrap of ``scipy.stats.bootstrap`` (what rliable computes for one task), with a fixed
    random stream so that a report is reproducible. (None, None) for fewer than 2 values.
    With 3 seeds it is a rough interval (it can only be as wide as the seeds are apart):
    more seeds, narrower and more trustworthy intervals."""
    x = np.asarray([v for v in values if v is not None], float)
    if len(x) < 2:
        return None, None
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    from scipy.stats import bootstrap

    res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=resamples,
                    method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def iqm(values) -> float | None:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.asarray([v for v in values if v is not None], float).ravel()
    if not len(x):
        return None
    from scipy.stats import trim_mean

    return float(trim_mean(x, 0.25))


def probability_of_improvement(x, y) -> float | None:
    """P(X > Y): the chance that a seed of X scores above a seed of Y, ties counting half
    (the Mann-Whitney U statistic / (n m), rliable's probability of improvement for one task)."""
    x = [v for v in x if v is not None]
    y = [v for v in y if v is not None]
    if not x or not y:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(x, y).statistic) / (len(x) * len(y))


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
    """One trained seed of a sweep (a job, or one seed of a job that trained several)."""

    path: Path
    name: str
    num: int | None
    overrides: dict
    raw_overrides: list[str] = field(default_factory=list)
    exclude: tuple = RUN_ONLY_KEYS
    eval: dict | None = None
    history: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)  # training metrics, one dict per step
    metrics_source: str = ""
    wandb_id: str = ""
    wandb_group: str = ""

    @property
    def seed(self):
        return self.overrides.get("seed", MISSING)

    def final_win_rates(self) -> dict[str, float]:
        if not self.eval:
            return {}
        return {k: r["win"] / r["episodes"] for k, r in self.eval.items() if r.get("episodes")}

    def objective(self) -> float | None:
        """The score of the final evaluation (None: no ``eval.json``)."""
        return kill_margin_score(self.eval) if self.eval else None

    def worst_win(self) -> float | None:
        return worst_win_rate(self.eval) if self.eval else None

    def config_id(self) -> str:
        return config_id(self.raw_overrides, self.exclude)

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

    def score_curve(self) -> list[tuple[float, float]]:
        """(updates, score) of each evaluation during training."""
        return [(h["step"], kill_margin_score(h["table"])) for h in self.history
                if h.get("table") and "step" in h]


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


def _fill(run: Run, path: Path) -> Run:
    """Read what one training run wrote into ``path``."""
    if (path / "eval.json").is_file():
        run.eval = json.loads((path / "eval.json").read_text())
    if (path / "eval_history.jsonl").is_file():
        for line in (path / "eval_history.jsonl").read_text().splitlines():
            if line.strip():
                try:
                    run.history.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut short by a killed job
    csvs = sorted(p for p in path.rglob("metrics.csv")
                  if "wandb" not in p.parts and not any(q.startswith("seed_") for q in
                                                        p.relative_to(path).parts))
    if csvs:
        run.metrics, run.metrics_source = _read_csv_metrics(csvs[0]), "csv"
    if (path / WANDB_RUN_FILE).is_file():  # written by battle_rl.outputs.loggers as the run starts
        try:
            wb = json.loads((path / WANDB_RUN_FILE).read_text())
            run.wandb_id, run.wandb_group = wb.get("id", ""), wb.get("group") or ""
        except json.JSONDecodeError:
            pass  # cut short by a killed job
    return run


def _exclude_keys(path: Path) -> tuple:
    """The keys the job's folder name leaves out (``hydra.job.config.override_dirname``)."""
    try:
        hydra = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text()) or {}
        keys = hydra["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
        return tuple(keys) if keys else RUN_ONLY_KEYS
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return RUN_ONLY_KEYS


def _config_seed(path: Path):
    try:
        return (yaml.safe_load((path / ".hydra" / "config.yaml").read_text()) or {}).get("seed")
    except (OSError, yaml.YAMLError):
        return None


def load_runs(path: Path, sweep_dir: Path) -> list[Run]:
    """The runs of one job folder: itself, or one per ``seed_<K>/`` folder (``job_seeds``)."""
    raw = [str(o) for o in yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []]
    overrides = dict(parse_override(o) for o in raw)
    name = str(path.relative_to(sweep_dir)) if path != sweep_dir else "."
    num, exclude = _job_number(path, sweep_dir), _exclude_keys(path)
    seeds = sorted((p for p in path.glob("seed_*") if p.is_dir() and p.name[5:].isdigit()),
                   key=lambda p: int(p.name[5:]))
    if not seeds:
        if "seed" not in overrides:  # the configuration's seed, for the jobs table
            seed = _config_seed(path)
            overrides = {**overrides, **({} if seed is None else {"seed": seed})}
        return [_fill(Run(path=path, name=name, num=num, overrides=overrides, raw_overrides=raw,
                          exclude=exclude), path)]
    return [_fill(Run(path=p, name=f"{name}/{p.name}", num=num,
                      overrides={**{k: v for k, v in overrides.items() if k not in SEED_KEYS},
                                 "seed": int(p.name[5:])},
                      raw_overrides=raw, exclude=exclude), p) for p in seeds]


def load_run(path: Path, sweep_dir: Path) -> Run:
    """The (first) run of a job folder."""
    return load_runs(path, sweep_dir)[0]


def load_sweep(sweep_dir: Path) -> list[Run]:
    return [r for p in find_run_dirs(sweep_dir) for r in load_runs(p, sweep_dir)]


# ---------------------------------------------------------------------------- configurations


def split_overrides(runs: list[Run]) -> tuple[list[str], dict]:
    """(keys whose values differ between runs, in first-seen order; overrides all share)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys]
    swept = [k for k in keys
             if len({json.dumps(r.overrides.get(k, None), default=str) for r in runs}) > 1]
    common = {k: runs[0].overrides[k] for k in keys if k not in swept and k in runs[0].overrides
              and k not in SEED_KEYS}
    return swept, common


def config_keys(swept: list[str]) -> list[str]:
    """The swept keys that make configurations differ (the seeds aside)."""
    return [k for k in swept if k not in SEED_KEYS]


@dataclass
class Config:
    """The runs of one configuration (jobs that differ only in the seed) and their figures."""

    values: dict  # the configuration's value of each swept key
    runs: list[Run]
    rank: int | None = None
    scores: list[float] = field(default_factory=list)  # one per seed with a final evaluation
    mean: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    iqm: float | None = None
    std: float | None = None
    worst_win: float | None = None
    worst_win_ci: tuple[float | None, float | None] = (None, None)
    win_rates: dict[str, float] = field(default_factory=dict)  # mean per opponent
    p_best_better: float | None = None  # P(a seed of #1 beats a seed of this one)
    below_best: bool | None = None  # its interval lies wholly below #1's
    label: str = ""

    @property
    def n_seeds(self) -> int:
        return len(self.scores)

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]

    @property
    def config_id(self) -> str:
        return self.runs[0].config_id()

    def compute(self, opponents: list[str]) -> None:
        scored = [r for r in self.runs if r.objective() is not None]
        self.scores = [r.objective() for r in scored]
        if not scored:
            return
        self.mean = float(np.mean(self.scores))
        self.std = float(np.std(self.scores, ddof=1)) if len(scored) > 1 else None
        self.ci = interval(self.scores)
        margins = [m for r in scored for m in kill_margins(r.eval).values()]
        self.iqm = iqm(margins)
        worst = [r.worst_win() for r in scored if r.worst_win() is not None]
        self.worst_win = float(np.mean(worst)) if worst else None
        self.worst_win_ci = interval(worst)
        for o in opponents:
            rates = [r.final_win_rates()[o] for r in scored if o in r.final_win_rates()]
            if rates:
                self.win_rates[o] = float(np.mean(rates))


def group_configs(runs: list[Run], swept: list[str] | None = None) -> list[Config]:
    """The configurations of a sweep: runs with the same values of the swept keys, the seed
    aside, in the order of their first job."""
    if swept is None:
        swept = split_overrides(runs)[0]
    keys = config_keys(swept)
    groups: dict[str, Config] = {}
    for r in runs:
        values = {k: r.overrides.get(k) for k in keys}
        ident = json.dumps(values, sort_keys=True, default=str)
        if ident not in groups:
            groups[ident] = Config(values=values, runs=[])
        groups[ident].runs.append(r)
    return list(groups.values())


def rank_configs(configs: list[Config], opponents: list[str]) -> list[Config]:
    """Compute each configuration's figures and rank them by mean score (the best first;
    those without a final evaluation last); compare each with the best."""
    for c in configs:
        c.compute(opponents)
    ranked = sorted(configs, key=lambda c: (c.mean is None, -(c.mean or 0.0)))
    for i, c in enumerate(ranked):
        c.rank = i + 1 if c.mean is not None else None
    best = ranked[0] if ranked and ranked[0].mean is not None else None
    for c in ranked:
        if best is None or c.mean is None or c is best:
            continue
        c.p_best_better = probability_of_improvement(best.scores, c.scores)
        if c.ci[1] is not None and best.ci[0] is not None:
            c.below_best = c.ci[1] < best.ci[0]
    return ranked


def apart(configs: list[Config]) -> list[tuple[Config, list[Config]]]:
    """For each ranked configuration, those ranked below it whose interval lies wholly below
    its own (the differences the intervals tell apart)."""
    out = []
    for i, c in enumerate(configs):
        if c.ci[0] is None:
            continue
        lower = [d for d in configs[i + 1:] if d.ci[1] is not None and d.ci[1] < c.ci[0]]
        if lower:
            out.append((c, lower))
    return out


# ---------------------------------------------------------------------------- table


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


def config_label(config: Config, short: dict[str, str]) -> str:
    vals = ",".join(f"{short[k]}={v}" for k, v in config.values.items())
    return vals or "defaults"


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def _ci_text(ci) -> str:
    return MISSING if ci[0] is None else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


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


def final_opponents(runs: list[Run]) -> list[str]:
    seen: list[str] = []
    for r in runs:
        seen += [k for k in (r.eval or {}) if k not in seen]
    return seen


def config_rows(configs: list[Config], keys: list[str], opps: list[str]
                ) -> tuple[list[str], list[list]]:
    """report.csv: one row per configuration (the best first)."""
    header = ["rank", "config_id", *keys, "n_seeds", "objective_mean", "objective_ci_low",
              "objective_ci_high", "objective_iqm", "objective_std", "p_best_better",
              "below_best", "min_win_rate_mean", "min_win_rate_ci_low", "min_win_rate_ci_high",
              *[f"win_rate_{o}" for o in opps], "seeds", "jobs"]
    rows = []
    for c in configs:
        rows.append([c.rank, c.config_id, *[c.values.get(k) for k in keys], c.n_seeds, c.mean,
                     c.ci[0], c.ci[1], c.iqm, c.std, c.p_best_better, c.below_best,
                     c.worst_win, c.worst_win_ci[0], c.worst_win_ci[1],
                     *[c.win_rates.get(o) for o in opps],
                     " ".join(map(str, c.seeds)), " ".join(r.name for r in c.runs)])
    return header, rows


def table_rows(runs: list[Run], swept: list[str], target: float) -> tuple[list[str], list[list]]:
    """One row per run (job, or seed of a job)."""
    opps = opponents_of(runs)
    header = ["job", *swept, "score", *[f"win {o}" for o in opps], "min win",
              f"time to {target:g} (s)", f"updates to {target:g}", "final reward",
              "train reward", "W&B run"]
    rows = []
    for r in runs:
        rates = r.final_win_rates()
        ttw = r.time_to_win(target)
        rows.append([
            r.name if r.num is None else (f"{r.num}/{r.path.name}" if "/" in r.name else r.num),
            *[r.overrides.get(k, MISSING) for k in swept],
            r.objective(),
            *[rates.get(o) for o in opps],
            r.worst_win(),
            ttw[0] if ttw else None,
            ttw[1] if ttw else None,
            r.final_reward(),
            r.train_reward(),
            r.wandb_id or MISSING,
        ])
    return header, rows


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c if isinstance(c, str) else _fmt(c) for c in row) + " |"
              for row in rows]
    return lines


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([["" if c is None else c for c in row] for row in rows])


def write_markdown(sweep_dir: Path, runs: list[Run], configs: list[Config], swept: list[str],
                   common: dict, target: float, plots: list[str], notes: list[str]) -> Path:
    keys = config_keys(swept)
    short = short_keys(keys)
    opps = final_opponents(runs)
    lines = [f"# Sweep report: `{sweep_dir}`", ""]
    scored = [c for c in configs if c.mean is not None]
    lines.append(f"{len(configs)} configurations, {len(runs)} runs (seeds); "
                 f"{sum(r.eval is not None for r in runs)} with a final evaluation "
                 f"(`eval.json`).")
    groups = sorted({r.wandb_group for r in runs if r.wandb_group})
    if groups:
        lines.append(f"W&B group: {', '.join(f'`{g}`' for g in groups)}; runs table: "
                     f"Group by `config_id` averages each configuration's seeds "
                     f"(upload: `wandb sync {sweep_dir}/*/wandb/offline-run-*`).")
    if common:
        lines.append("Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()))
    opt = sweep_dir / "optimization_results.yaml"
    if opt.is_file():
        res = yaml.safe_load(opt.read_text()) or {}
        lines.append(f"Optuna best: value {_fmt(res.get('best_value'))}, params "
                     f"`{json.dumps(res.get('best_params', {}), default=str)}`.")
    lines += ["", f"Score: the mean over the final evaluation's opponents ({', '.join(opps)}) "
              f"of the kill margin per game / {TEAM_SIZE}, in [-1, 1] (docs/sweeps.md). "
              f"Per configuration: the mean over its seeds, a {CONFIDENCE:.0%} interval of "
              f"that mean (percentile bootstrap over the seeds), the IQM of its seed x "
              f"opponent kill margins, P(#1 better): the chance that a seed of the best "
              f"configuration scores above a seed of this one; apart: this one's interval "
              f"lies wholly below #1's. Min win: the worst final win rate over the opponents "
              f"(the old objective), mean over seeds; win <opponent>: mean over seeds.", ""]
    if scored:
        best = scored[0]
        lines.append(f"Best configuration: **{config_label(best, short)}** (score "
                     f"{_fmt(best.mean)} {_ci_text(best.ci)}, {best.n_seeds} seed(s)).")
        most = max(c.n_seeds for c in scored)
        if 2 <= most < 5:
            lines.append(f"With {most} seeds the intervals are rough (a bootstrap over {most} "
                         f"values is no wider than they are apart): differences told apart "
                         f"here are worth a second sweep with other seeds (`seed=...`).")
        few = [c for c in scored if c.n_seeds < 2]
        if few:
            lines.append(f"{len(few)} configuration(s) with fewer than 2 seeds: no interval "
                         f"(`seeds=3` or `seed=0,1,2` gives each 3).")
        pairs = apart(scored)
        if pairs:
            lines.append("Told apart by the intervals (the first's lies wholly above the "
                         "others'):")
            lines += [f"- #{c.rank} {config_label(c, short)} > "
                      + ", ".join(f"#{d.rank}" for d in lower) for c, lower in pairs]
        elif len(scored) > 1:
            lines.append("No two configurations are told apart by their intervals: the "
                         "differences may be the seeds' (more seeds: `seeds=5`).")
        lines.append("")
    header = ["rank", *[short[k] for k in keys], "seeds", "score", f"{CONFIDENCE:.0%} CI",
              "IQM", "P(#1 better)", "apart", "min win", *[f"win {o}" for o in opps],
              "config_id"]
    rows = [[c.rank if c.rank is not None else MISSING, *[c.values.get(k) for k in keys],
             c.n_seeds, c.mean, _ci_text(c.ci), c.iqm, c.p_best_better, c.below_best,
             c.worst_win, *[c.win_rates.get(o) for o in opps], f"`{c.config_id}`"]
            for c in configs]
    lines += ["## Configurations", ""] + _md_table(header, rows)
    jheader, jrows = table_rows(runs, swept, target)
    lines += ["", "## Runs", "", f"One row per run (seed). Time / updates to {target:g}: "
              f"training seconds (evaluation excluded) and updates until the evaluation during "
              f"training first reached a win rate of {target:g} against every opponent "
              f"({MISSING}: not reached or no evaluation during training). Final reward: blue "
              f"reward per agent in the final evaluation (the game's rewards), mean over "
              f"opponents; train reward: the last training episode (shaped rewards).", ""]
    lines += _md_table(jheader, jrows)
    lines += ["", "Jobs:"]
    lines += [f"- {r.num if r.num is not None else '-'}: `{r.name}`" for r in runs]
    if plots or notes:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + notes
    out = sweep_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    _write_csv(sweep_dir / "report.csv", *config_rows(configs, keys, opps))
    _write_csv(sweep_dir / "report_jobs.csv", jheader, jrows)
    return out


# ---------------------------------------------------------------------------- plots


def _save(fig, path: Path, labels: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Description": "runs: " + json.dumps(labels)})


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_band(curves: list[list[tuple[float, float]]]):
    """Curves (x, y) of the seeds -> (x, mean, low, high) at the x all of them reached
    (evaluations every N updates: the same x for every seed)."""
    xs = sorted(set.intersection(*[{p[0] for p in c} for c in curves])) if curves else []
    if not xs:
        return [], [], [], []
    table = [dict(c) for c in curves]
    ys = np.array([[t[x] for x in xs] for t in table])
    return xs, ys.mean(0), ys.min(0), ys.max(0)


def plot_learning_curves(sweep_dir: Path, configs: list[Config], labels: list[str],
                         opps: list[str]) -> list[str]:
    """``learning_curve.png``: score and win rate per opponent of the evaluations during
    training: per configuration the mean over its seeds, the band from the lowest to the
    highest seed. Nothing (the caller says why) without evaluations during training."""
    drawn = [(c, lb) for c, lb in zip(configs, labels) if any(r.score_curve() for r in c.runs)]
    if not drawn:
        return []
    plt = _pyplot()
    panels = ["score", *opps]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for c, label in drawn:
            if panel == "score":
                curves = [cv for cv in (r.score_curve() for r in c.runs) if cv]
            else:
                key = f"eval/win_rate/{panel}"
                curves = [[(h["step"], h[key]) for h in r.history if key in h and "step" in h]
                          for r in c.runs]
                curves = [cv for cv in curves if cv]
            _plot_band(ax, curves, label, ms=3)
        if panel == "score":
            ax.set(title="score (mean kill margin / 81)", ylim=(-1.05, 1.05))
        else:
            ax.set(title=f"win rate vs {panel}", ylim=(-0.05, 1.05))
        ax.set(xlabel="updates", ylabel=panel if panel == "score" else "win rate")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best", title="mean, band: seeds' range", title_fontsize=7)
    _save(fig, sweep_dir / "learning_curve.png", [lb for _, lb in drawn])
    plt.close(fig)
    return ["learning_curve.png"]


def _plot_band(ax, curves: list, label: str, ms: float) -> None:
    """One configuration's curves (one per seed): their mean, and their range as a band."""
    xs, mean, low, high = _mean_band(curves)
    if not xs:
        return
    line, = ax.plot(xs, mean, marker="o", ms=ms, label=f"{label} ({len(curves)})")
    if len(curves) > 1:
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)


def plot_train_reward(sweep_dir: Path, configs: list[Config], labels: list[str]) -> list[str]:
    """``train_reward.png``: the training episode reward, per configuration the mean over its
    seeds at the logged updates, the seeds' range as a band. Nothing where none was logged."""
    def curve(r: Run) -> list[tuple[float, float]]:
        return [(m["step"], m["rollout/blue_reward"]) for m in r.metrics
                if "rollout/blue_reward" in m and "step" in m]

    drawn = [(c, lb) for c, lb in zip(configs, labels) if any(curve(r) for r in c.runs)]
    if not drawn:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for c, label in drawn:
        _plot_band(ax, [cv for cv in map(curve, c.runs) if cv], label, ms=2)
    ax.set(title="training episode reward (blue, per agent)", xlabel="updates", ylabel="reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", title="mean, band: seeds' range", title_fontsize=7)
    _save(fig, sweep_dir / "train_reward.png", [lb for _, lb in drawn])
    plt.close(fig)
    return ["train_reward.png"]


def plot_final_vs(sweep_dir: Path, configs: list[Config], labels: list[str], keys: list[str],
                  short: dict[str, str]) -> list[str]:
    """``final_vs_<key>.png`` per swept key: each configuration's mean score and mean worst
    win rate with their intervals at its value of the key (configurations sharing a value
    side by side), and the mean over them per value as a line. Over many numeric values (an
    Optuna search), the values themselves on the x axis, one point per configuration."""
    plt = _pyplot()
    written = []
    metrics = [("score", lambda c: (c.mean, c.ci)),
               ("min final win rate", lambda c: (c.worst_win, c.worst_win_ci))]
    many = 8  # more distinct numeric values than this: a continuous axis
    for key in keys:
        values = [c.values.get(key) for c in configs]
        present = [v for v in values if v is not None]
        numeric = _numeric(present)
        order = sorted(set(present)) if numeric else list(dict.fromkeys(map(str, present)))
        continuous = numeric and len(order) > many
        fig, axes = plt.subplots(1, len(metrics), figsize=(11, 4), squeeze=False)
        used = []
        for panel, (ax, (title, fn)) in enumerate(zip(axes[0], metrics)):
            slot: dict = {}
            pts = []
            for c, v, label in zip(configs, values, labels):
                y, ci = fn(c)
                if v is None or y is None:
                    continue
                i = order.index(v if numeric else str(v))
                k = slot[i] = slot.get(i, -1) + 1
                pts.append((i, k, y, ci, label))
            width = max([p[1] for p in pts], default=0) + 1
            for i, k, y, ci, label in pts:
                x = order[i] if continuous else i + (k - (width - 1) / 2) * 0.6 / max(width, 1)
                err = None if ci[0] is None else [[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]]
                ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3, alpha=0.8,
                            color=f"C{labels.index(label) % 10}",
                            label=label if panel == 0 and not continuous else None)
                if label not in used:
                    used.append(label)
            if continuous:
                if min(order) > 0 and max(order) / min(order) > 20:
                    ax.set_xscale("log")
            else:
                means = []
                for i in range(len(order)):
                    ys = [p[2] for p in pts if p[0] == i]
                    if ys:
                        means.append((i, sum(ys) / len(ys)))
                if means:
                    ax.plot([m[0] for m in means], [m[1] for m in means], "k-", alpha=0.4,
                            label="mean of the means")
                    ax.legend(fontsize=6, loc="best")
                ax.set_xticks(range(len(order)), [str(v) for v in order],
                              rotation=30 if not numeric else 0)
            ax.set(title=f"{title} vs {short[key]} ({CONFIDENCE:.0%} intervals over seeds)",
                   xlabel=key, ylabel=title)
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
        name = f"final_vs_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.png"
        _save(fig, sweep_dir / name, used)
        plt.close(fig)
        written.append(name)
    return written


# ---------------------------------------------------------------------------- entry point


def write_report(sweep_dir: str | Path, target: float = 1.0, plots: bool = True) -> dict:
    """Write ``report.md``, ``report.csv``, ``report_jobs.csv`` and the plots into
    ``sweep_dir``; return a summary."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    runs = load_sweep(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no job folders (with .hydra/overrides.yaml) in {sweep_dir}")
    swept, common = split_overrides(runs)
    keys = config_keys(swept)
    short = short_keys(keys)
    configs = rank_configs(group_configs(runs, swept), final_opponents(runs))
    labels = [config_label(c, short) for c in configs]
    written, notes = [], []
    if plots:
        curves = plot_learning_curves(sweep_dir, configs, labels, final_opponents(runs))
        written += curves
        if not curves:
            notes.append("No learning curve: no run evaluated during training "
                         "(`eval.every_n_steps=0`, the default recipe's; "
                         "`eval.every_n_steps=N` evaluates every N updates).")
        written += plot_train_reward(sweep_dir, configs, labels)
        written += plot_final_vs(sweep_dir, configs, labels, keys, short)
    md = write_markdown(sweep_dir, runs, configs, swept, common, target, written, notes)
    return {"runs": runs, "configs": configs, "labels": labels, "swept": swept,
            "common": common, "report": md, "plots": [sweep_dir / p for p in written],
            "notes": notes}


def _hydra_callback_base():
    try:
        from hydra.experimental.callback import Callback
    except ImportError:  # the report itself needs no Hydra
        return object
    return Callback


class WriteReport(_hydra_callback_base()):
    """Hydra callback (``hydra.callbacks`` of the sweeps in ``multirun_sweeps/``): the report
    of the sweep's folder once every job has ended. A report that cannot be written costs a
    line, never the sweep."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            out = write_report(sweep_dir)
        except Exception as e:  # noqa: BLE001 - the jobs' results stay, the report can follow
            print(f"note: no sweep report ({type(e).__name__}: {e}); write it with "
                  f"`python -m battle_rl.outputs.report {sweep_dir}`", flush=True)
            return
        print(f"sweep report: {out['report']}", flush=True)


def main(argv: list[str] | None = None, prog: str = "python -m battle_rl.outputs.report") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Offline report of a Hydra sweep folder (multirun/...): the configurations "
                    "ranked by score with 95% intervals over their seeds; report.md, "
                    "report.csv (one row per configuration), report_jobs.csv and PNG plots, "
                    "written into that folder.")
    parser.add_argument("sweep_dir", help="the sweep's folder (hydra.sweep.dir)")
    parser.add_argument("--target", type=float, default=1.0,
                        help="win rate against every opponent that counts as 'won' for the "
                             "time-to-win column (default: 1.0)")
    parser.add_argument("--no-plots", action="store_true", help="the tables only")
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
