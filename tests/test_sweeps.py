"""Sweeps: the configs in multirun_sweeps/, parallel jobs (joblib, Ray), one W&B run per job in
one group, the Optuna objective, and the offline report."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from PIL import Image

from battle_rl.outputs.loggers import sweep_group
from battle_rl.outputs.report import main as report_main
from battle_rl.outputs.report import parse_override, short_keys, write_report
from battle_rl.score import config_id, kill_margin_score

from conftest import ROOT, run_script

SWEEP_JOBS = {"epsilon": 12, "tau": 5, "gamma": 4, "grid": 8}


def png_runs(path: Path) -> list[str]:
    """The job labels a report plot says it draws (its PNG ``Description`` text chunk)."""
    with Image.open(path) as im:
        im.verify()
        text = im.info["Description"]
    assert text.startswith("runs: ")
    return json.loads(text[len("runs: "):])


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").is_file())


# ------------------------------------------------------------------------------ configs


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name,jobs", sorted(SWEEP_JOBS.items()))
def test_grid_sweep_configs_compose(name, jobs):
    """``jobs`` configurations, each run with 3 seeds (``seeds=N`` on the command line)."""
    cfg = compose(f"+sweep={name}")
    params = dict(cfg.hydra.sweeper.params)
    assert params.pop("seed") == "range(0,3)" and cfg.seeds == 3
    assert list(cfg.hydra.sweeper.params)[0] == "seed"  # seed 0 of every configuration first
    assert math.prod(len(str(v).split(",")) for v in params.values()) == jobs
    assert all(k.startswith("hparams.") for k in params)
    assert compose(f"+sweep={name}", "seeds=5").hydra.sweeper.params.seed == "range(0,5)"
    assert cfg.sweep_name == name and cfg.threads == 1
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    assert cfg.hydra.sweep.dir.startswith(f"multirun/{name}/")


def test_optuna_sweep_config_maximises():
    cfg = compose("+sweep=optuna")
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and sw.direction == "maximize"
    assert {"hparams.epsilon.start", "hparams.epsilon.end", "hparams.epsilon.decay",
            "hparams.tau", "hparams.gamma"} == set(sw.params)  # never the seed: ...
    assert cfg.job_seeds == 3  # ... each trial's job trains 3 seeds in turn
    assert compose("+sweep=optuna", "seeds=2").job_seeds == 2
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


def test_cluster_launcher_configs_compose():
    slurm = compose("+sweep=grid", "hydra/launcher=slurm").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.cpus_per_task == 1
    ray = compose("+sweep=grid", "hydra/launcher=ray_local").hydra.launcher
    assert ray._target_.endswith("RayLauncher") and ray.ray.remote.num_cpus == 1
    assert ray.ray.init.address == "local"  # a new local instance, never a running cluster
    cluster = compose("+sweep=grid", "hydra/launcher=ray_cluster").hydra.launcher
    # joining: no CPU count, and no object store size (ray.init refuses both when joining)
    assert cluster.ray.init.address == "auto" and "num_cpus" not in cluster.ray.init
    assert "object_store_memory" in cluster.ray.init and cluster.ray.init.object_store_memory is None


@pytest.mark.parametrize("arg,expected", [
    ("+sweep=gama", "error: sweep='gama' is not an option of 'sweep' "
                    "(choose from: epsilon, gamma, grid, optuna, ppo, tau)"),
    ("+budget=small", "error: budget='small' is not an option of 'budget' (choose from: tiny)"),
])
def test_unknown_sweep_one_line(tmp_path, arg, expected):
    r = run_script("train.py", "-m", arg, f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "sweep").exists()


def test_run_tags_fit_wandb_limit():
    """A long opponent mix makes a long tag; W&B refuses tags over 64 characters (the run
    would not start), so they are shortened."""
    from battle_rl.config import compose_overrides
    from battle_rl.outputs.loggers import run_tags

    names = ["rival_number_one", "rival_number_two", "rival_number_three"]
    cfg = compose_overrides("config", [f"+opponent.weights.{n}=1" for n in names])
    tags = run_tags(cfg, {"reward": "seed"})
    assert tags[0] == "algo:ddqn" and tags[1].startswith("opponent:random+pretrained+final+")
    assert all(len(t) <= 64 for t in tags) and tags[1].endswith("...")


def test_sweep_group_names():
    assert sweep_group("multirun/grid/2026-01-02_03-04-05") == "grid_2026-01-02_03-04-05"
    assert sweep_group("multirun/2026-01-02/03-04-05") == "2026-01-02_03-04-05"
    assert sweep_group("/tmp/x/my-sweep") == "x_my-sweep"


# ------------------------------------------------------------------------------ report


def fake_job(sweep: Path, num: int, overrides: list[str],
             evals: list[tuple[int, float, float, float]], final: dict | None,
             train_rewards: list[float] | None = None, folder: Path | None = None) -> Path:
    """A job folder as train.py leaves it. ``evals``: (step, train seconds, win rate vs random,
    win rate vs final); ``final``: {opponent: (wins of 30, blue reward, score)}: the kills
    make that opponent's kill margin / 81 the score. ``folder``: a seed folder of a job
    that trained several (``job_seeds``) instead of the job's."""
    d = sweep / f"{num}_{','.join(overrides)}"
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides + ["+sweep=grid"]))
    d = d / folder if folder else d
    d.mkdir(exist_ok=True)
    with (d / "eval_history.jsonl").open("w") as f:
        for step, secs, wr, wf in evals:
            table = {o: {"episodes": 10, "win": round(10 * w), "draw": 10 - round(10 * w),
                         "lose": 0, "blue_reward": w - 0.5, "red_reward": 0.0,
                         "blue_kills": 81.0 * w, "red_kills": 0.0}
                     for o, w in (("random", wr), ("final", wf))}
            f.write(json.dumps({"step": step, "eval/win_rate/random": wr,
                                "eval/win_rate/final": wf, "eval/min_win_rate": min(wr, wf),
                                "eval/train_seconds": secs, "table": table}) + "\n")
    if final is not None:
        (d / "eval.json").write_text(json.dumps(
            {o: {"episodes": 30, "win": w, "draw": 30 - w, "lose": 0, "blue_reward": r,
                 "red_reward": -r, "blue_kills": 81.0 * max(s, 0), "red_kills": -81.0 * min(s, 0)}
             for o, (w, r, s) in final.items()}))
    if train_rewards:
        (d / "csv").mkdir()
        with (d / "csv" / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "train/td_loss", "rollout/blue_reward"])
            for i, r in enumerate(train_rewards):
                w.writerow([i * 50, 0.1, r])
                w.writerow([i * 50 + 1, 0.1, ""])  # rows without the key are skipped
    return d


def both(wins: int, reward: float, score: float) -> dict:
    return {"random": (wins, reward, score), "final": (wins, reward, score)}


@pytest.fixture
def synthetic_sweep(tmp_path):
    """tau=0.01,gamma=0.9 (seeds 0-2, scores 0.5-0.7), tau=0.1,gamma=0.9 (seeds 0-2, 0.1-0.3),
    tau=0.01,gamma=0.99 (seed 0: 0.4; seed 1 died early), evaluations during training."""
    sweep = tmp_path / "multirun" / "grid" / "2026-01-02_03-04-05"
    num = 0
    for tau, gamma, scores in (("0.01", "0.9", [0.5, 0.6, 0.7]), ("0.1", "0.9", [0.1, 0.2, 0.3]),
                               ("0.01", "0.99", [0.4, None])):
        for seed, s in enumerate(scores):
            fake_job(sweep, num, [f"seed={seed}", f"hparams.tau={tau}", f"hparams.gamma={gamma}"],
                     [(100, 5.0, 0.2 * (seed + 1), 0.1), (200, 10.0, 1.0, 0.5 + 0.1 * seed)],
                     None if s is None else both(30 if s > 0.3 else 20, s, s),
                     train_rewards=[0.1, 0.5, 0.9 + seed])
            num += 1
    return sweep


def read_md_table(md: str, section: str = "## Configurations") -> tuple[list[str], list[list[str]]]:
    """The first table after the ``section`` heading of report.md."""
    lines = md.split(section, 1)[1].splitlines()
    lines = [ln for ln in lines[:next((i for i, ln in enumerate(lines) if ln.startswith("## ")),
                                      len(lines))] if ln.startswith("| ")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return rows[0], rows[1:]


def test_kill_margin_score_is_the_objective():
    """The score: the mean over opponents of (blue kills - red kills) / 81 per game."""
    from battle_rl.score import kill_margin_score, kill_margins, worst_win_rate

    table = {"random": {"episodes": 30, "win": 30, "blue_kills": 81.0, "red_kills": 0.0},
             "final": {"episodes": 30, "win": 30, "blue_kills": 60.0, "red_kills": 20.0},
             "champion": {"episodes": 30, "win": 0, "blue_kills": 10.0, "red_kills": 71.5}}
    assert kill_margins(table) == pytest.approx({"random": 1.0, "final": 40 / 81,
                                                 "champion": -61.5 / 81})
    assert kill_margin_score(table) == pytest.approx((81 + 40 - 61.5) / 81 / 3)
    assert worst_win_rate(table) == 0.0
    # two agents that both win every game against the weak teams still rank apart
    strong = {"random": {"episodes": 30, "win": 30, "blue_kills": 81.0, "red_kills": 0.0}}
    weak = {"random": {"episodes": 30, "win": 30, "blue_kills": 50.0, "red_kills": 20.0}}
    assert worst_win_rate(strong) == worst_win_rate(weak) == 1.0
    assert kill_margin_score(strong) == 1.0 > kill_margin_score(weak)
    assert kill_margin_score({}) == 0.0


def test_config_id_leaves_the_seed_out():
    from battle_rl.score import config_id

    a = config_id(["seed=0", "hparams.tau=0.05", "+sweep=grid", "hparams.gamma=0.9"])
    assert a == "hparams.gamma=0.9,hparams.tau=0.05"  # sorted; the seed and the sweep left out
    assert config_id(["hparams.gamma=0.9", "seed=4", "hparams.tau=0.05", "logger=none"]) == a
    assert config_id(["seeds=2", "job_seeds=2"]) == "defaults"
    assert config_id([r"trainer.max_time=00\:00\:00\:20"]) == "trainer.max_time=00:00:00:20"
    with_path = config_id(["hparams.tau=0.05", "opponents_dir=/a/b"])
    assert with_path.startswith("hparams.tau=0.05-") and len(with_path) == 16 + 1 + 8
    assert with_path != config_id(["hparams.tau=0.05", "opponents_dir=/a/c"])
    long = config_id([f"hparams.key_number_{i}=0.123456" for i in range(9)])
    assert len(long) <= 64 and long == config_id([f"hparams.key_number_{i}=0.123456"
                                                  for i in reversed(range(9))])


def test_intervals_on_a_known_input():
    from battle_rl.outputs.report import interval, iqm, probability_of_improvement

    # two seeds, 0 and 1: the bootstrap means are 0, 0.5 and 1 (1/4, 1/2, 1/4)
    assert interval([0.0, 1.0]) == (0.0, 1.0)
    assert interval([0.3]) == (None, None) and interval([]) == (None, None)
    assert interval([0.2, 0.2, 0.2]) == (0.2, 0.2)
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    low, high = interval(values)
    assert interval(values) == (low, high)  # a fixed random stream: the same report twice
    # the normal approximation: mean 0.55, standard error 0.0908 -> about [0.37, 0.73]
    assert low == pytest.approx(0.37, abs=0.03) and high == pytest.approx(0.73, abs=0.03)
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == 4.5  # the middle half: 3, 4, 5, 6
    assert probability_of_improvement([3, 4], [1, 2]) == 1.0
    assert probability_of_improvement([1, 3], [2, 2]) == 0.5  # 1 < 2, 3 > 2
    assert probability_of_improvement([2], [2]) == 0.5  # ties count half
    assert probability_of_improvement([], [1]) is None


def test_report_groups_seeds_into_configurations(synthetic_sweep):
    out = write_report(synthetic_sweep)
    assert out["swept"] == ["seed", "hparams.tau", "hparams.gamma"]
    assert out["common"] == {"sweep": "grid"}
    configs = out["configs"]
    assert [c.values for c in configs] == [  # ranked by mean score
        {"hparams.tau": 0.01, "hparams.gamma": 0.9}, {"hparams.tau": 0.01, "hparams.gamma": 0.99},
        {"hparams.tau": 0.1, "hparams.gamma": 0.9}]
    best, one_seed, low = configs
    assert [c.rank for c in configs] == [1, 2, 3]
    assert [c.n_seeds for c in configs] == [3, 1, 3] and [len(c.runs) for c in configs] == [3, 2, 3]
    assert best.seeds == [0, 1, 2] and one_seed.seeds == [0, 1]
    assert best.mean == pytest.approx(0.6) and low.mean == pytest.approx(0.2)
    assert best.ci == pytest.approx((0.5, 0.7)) and low.ci == pytest.approx((0.1, 0.3))
    assert one_seed.ci == (None, None) and one_seed.mean == pytest.approx(0.4)
    assert low.p_best_better == 1.0 and low.below_best is True
    assert one_seed.p_best_better == 1.0 and one_seed.below_best is None
    assert best.win_rates == {"random": 1.0, "final": 1.0} and low.win_rates["random"] == 20 / 30
    assert best.config_id == "hparams.gamma=0.9,hparams.tau=0.01"
    assert out["labels"] == ["tau=0.01,gamma=0.9", "tau=0.01,gamma=0.99", "tau=0.1,gamma=0.9"]

    md = (synthetic_sweep / "report.md").read_text()
    header, rows = read_md_table(md)
    assert header[:8] == ["rank", "tau", "gamma", "seeds", "score", "95% CI", "IQM",
                          "P(#1 better)"]
    assert [r[:5] for r in rows] == [["1", "0.01", "0.9", "3", "0.6"],
                                     ["2", "0.01", "0.99", "1", "0.4"],
                                     ["3", "0.1", "0.9", "3", "0.2"]]
    assert rows[0][5] == "[0.5, 0.7]" and rows[1][5] == "—"
    assert "Best configuration: **tau=0.01,gamma=0.9**" in md
    assert "- #1 tau=0.01,gamma=0.9 > #3" in md  # told apart by the intervals
    jheader, jrows = read_md_table(md, "## Runs")
    assert jheader[:5] == ["job", "seed", "hparams.tau", "hparams.gamma", "score"]
    assert [r[0] for r in jrows] == [str(i) for i in range(8)] and jrows[7][4] == "—"

    with (synthetic_sweep / "report.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3  # one row per configuration
    assert {"n_seeds", "objective_mean", "objective_ci_low", "objective_ci_high",
            "objective_iqm", "config_id"} <= set(table[0])
    assert [t["n_seeds"] for t in table] == ["3", "1", "3"]
    assert float(table[0]["objective_ci_low"]) == pytest.approx(0.5)
    assert table[1]["objective_ci_low"] == "" and table[2]["seeds"] == "0 1 2"
    with (synthetic_sweep / "report_jobs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8

    names = {p.name for p in out["plots"]}
    assert names == {"learning_curve.png", "train_reward.png", "final_vs_hparams.tau.png",
                     "final_vs_hparams.gamma.png"}
    for p in out["plots"]:
        assert png_runs(p) and set(png_runs(p)) <= set(out["labels"])
        assert p.name in md
    assert png_runs(synthetic_sweep / "learning_curve.png") == out["labels"]


def test_report_of_a_job_that_trained_several_seeds(tmp_path):
    """``job_seeds`` (Optuna's trials): a job's ``seed_<K>/`` folders are its seeds."""
    sweep = tmp_path / "optuna"
    for seed, s in ((0, 0.2), (1, 0.4)):
        fake_job(sweep, 0, ["hparams.tau=0.05"], [], both(30, s, s), folder=Path(f"seed_{seed}"))
    fake_job(sweep, 1, ["hparams.tau=0.01"], [], both(30, 0.1, 0.1), folder=Path("seed_0"))
    out = write_report(sweep)
    assert [(c.values, c.n_seeds, c.seeds) for c in out["configs"]] == [
        ({"hparams.tau": 0.05}, 2, [0, 1]), ({"hparams.tau": 0.01}, 1, [0])]
    assert out["configs"][0].mean == pytest.approx(0.3)
    _, jrows = read_md_table((sweep / "report.md").read_text(), "## Runs")
    assert [r[0] for r in jrows] == ["0/seed_0", "0/seed_1", "1/seed_0"]


def test_report_without_evaluations_during_training(tmp_path):
    """No learning curve (and no empty figure): one line in report.md says why."""
    sweep = tmp_path / "gamma"
    for num, (gamma, seed, s) in enumerate([(0.9, 0, 0.3), (0.9, 1, 0.5), (0.99, 0, 0.1),
                                            (0.99, 1, 0.2)]):
        fake_job(sweep, num, [f"seed={seed}", f"hparams.gamma={gamma}"], [], both(30, s, s))
    out = write_report(sweep)
    assert {p.name for p in out["plots"]} == {"final_vs_hparams.gamma.png"}
    assert not (sweep / "learning_curve.png").exists()
    md = (sweep / "report.md").read_text()
    assert "No learning curve: no run evaluated during training" in md
    assert png_runs(sweep / "final_vs_hparams.gamma.png") == ["gamma=0.9", "gamma=0.99"]
    with (sweep / "report.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(t["hparams.gamma"], t["n_seeds"]) for t in table] == [("0.9", "2"), ("0.99", "2")]
    assert [float(t["objective_mean"]) for t in table] == pytest.approx([0.4, 0.15])
    assert float(table[0]["objective_ci_low"]) == pytest.approx(0.3)
    assert float(table[0]["objective_ci_high"]) == pytest.approx(0.5)
    assert "- #1 gamma=0.9 > #2" in md  # [0.3, 0.5] lies above [0.1, 0.2]
def test_report_cli(synthetic_sweep, capsys):
    assert report_main([str(synthetic_sweep), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "| rank |" in printed and "| job |" in printed
    assert not (synthetic_sweep / "learning_curve.png").exists()
    r = subprocess.run([sys.executable, "-m", "battle_rl.outputs.report", str(synthetic_sweep)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (synthetic_sweep / "learning_curve.png").is_file()
    assert r.stdout.strip().splitlines()[-1] == str(synthetic_sweep / "final_vs_hparams.gamma.png")


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_report_bad_folder_one_line(tmp_path, make, capsys):
    target = tmp_path / "sweep"
    if make == "empty":
        target.mkdir()
    assert report_main([str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(target) in err[0]


def test_parse_override_and_short_keys():
    assert parse_override("hparams.tau=0.05") == ("hparams.tau", 0.05)
    assert parse_override("+sweep=grid") == ("sweep", "grid")
    assert parse_override("trainer.max_time=00:00:01:30") == ("trainer.max_time", "00:00:01:30")
    assert parse_override(r"trainer.max_time=00\:00\:01\:30") == ("trainer.max_time",
                                                                   "00:00:01:30")
    assert parse_override("hparams.lr=1e-4") == ("hparams.lr", 1e-4)
    assert parse_override("hparams.epsilon.decay=500") == ("hparams.epsilon.decay", 500)
    assert parse_override("hparams.episodes=null") == ("hparams.episodes", None)
    assert parse_override("eval.opponents=[random,final]") == ("eval.opponents",
                                                               "[random,final]")
    assert short_keys(["hparams.epsilon.decay", "hparams.tau", "a.decay"]) == {
        "hparams.epsilon.decay": "epsilon.decay", "hparams.tau": "tau", "a.decay": "a.decay"}


# ------------------------------------------------------------------------------ real sweeps


def _wandb_window(job: Path) -> tuple[int, datetime, datetime]:
    """(pid, first, last) line of the job's wandb/debug.log: the W&B run's life in that job."""
    lines = (job / "wandb" / "debug.log").read_text().splitlines()
    pid = int(re.search(r"MainThread:(\d+)", lines[0]).group(1))
    stamp = lambda ln: datetime.strptime(ln[:23], "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return pid, stamp(lines[0]), stamp(lines[-1])


def check_sweep(sweep: Path, expected: list[dict]) -> list:
    """One output folder (one level, named from its swept values) and one finished offline
    W&B run per job, all in the sweep's group, each named from its overrides, tagged, with
    its full config and its configuration's ``config_id`` (the seed left out) as config key
    and job type (as far as W&B's own files show it: ``wandb_run.json`` is battle-rl's).
    ``expected``: per job, the values of the keys it names (``seed``, hparams' keys)."""
    jobs = job_dirs(sweep)
    assert len(jobs) == len(expected)
    runs = []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert (job / "policy.pt").is_file() and (job / "eval.json").is_file()
        history = (job / "eval_history.jsonl").read_text().splitlines()
        assert [json.loads(h)["step"] for h in history][:3] == [10, 20, 30]
        run = json.loads((job / "wandb_run.json").read_text())
        offline = sorted(job.glob("wandb/offline-run-*"))
        assert offline == [Path(run["dir"])] and offline[0].name.endswith(run["id"])
        debug_log = (offline[0] / "logs" / "debug.log").read_text()
        assert f"finishing run battle-rl/{run['id']}" in debug_log  # wandb.finish() ran
        assert run["group"] == sweep_group(sweep) and run["mode"] == "offline"
        assert run["name"] == ",".join(sorted(o for o in overrides if not o.startswith("+")))
        assert run["config_id"] == config_id(overrides)
        record = next(offline[0].glob("*.wandb")).read_bytes()
        for text in ("algo:ddqn", "opponent:random", "reward:fighter", run["group"],
                     "opponents_dir", "max_cycles", "batch_size", "config_id",
                     run["config_id"], "final/score"):
            assert text.encode() in record, text
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["env"]["max_cycles"] == 20 and config["threads"] == 1
        runs.append((job, overrides, config))
    seen = [{k: config[k] if k == "seed" else config["hparams"]["epsilon"][k] if k == "decay"
             else config["hparams"][k] for k in expected[0]} for _, _, config in runs]
    assert sorted(map(json.dumps, seen)) == sorted(map(json.dumps, expected))
    assert len({json.loads((j / "wandb_run.json").read_text())["id"] for j, _, _ in runs}) \
        == len(runs)
    # the seeds of one configuration share a config_id; configurations do not
    ids = {json.loads((j / "wandb_run.json").read_text())["config_id"] for j, _, _ in runs}
    assert len(ids) == len({json.dumps({k: v for k, v in e.items() if k != "seed"})
                            for e in expected})
    return runs


def check_report(sweep: Path, n_runs: int, n_configs: int, n_seeds: int) -> None:
    """The report the sweep wrote when it ended (hydra callback), written again by hand."""
    assert (sweep / "report.md").is_file() and (sweep / "report.csv").is_file()
    r = subprocess.run([sys.executable, "-m", "battle_rl.outputs.report", str(sweep)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (sweep / "report.md").read_text()
    header, rows = read_md_table(md)
    assert len(rows) == n_configs and "win random" in header
    assert [row[header.index("seeds")] for row in rows] == [str(n_seeds)] * n_configs
    jheader, jrows = read_md_table(md, "## Runs")
    assert len(jrows) == n_runs and all(row[jheader.index("W&B run")] != "—" for row in jrows)
    with (sweep / "report.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == n_configs
    assert all(-1 <= float(t["objective_ci_low"]) <= float(t["objective_mean"])
               <= float(t["objective_ci_high"]) <= 1 for t in table)
    plots = sorted(sweep.glob("*.png"))
    assert "learning_curve.png" in {p.name for p in plots}  # +budget=tiny evaluates every 10
    for p in plots:
        assert 1 <= len(png_runs(p)) <= n_configs


def test_joblib_sweep_2x2_parallel_wandb_runs_in_one_group(tmp_path):
    """The grid sweep, gamma and decay fixed: 2 taus x 2 seeds, tiny budget, 2 joblib
    processes at once; the report written at the end groups the seeds."""
    sweep = tmp_path / "grid"
    # a path-valued override (the course files, wherever they are) stays out of folder names
    deep = tmp_path / "a" / "deeply" / "nested" / "folder" / "of" / "opponents"
    r = run_script("train.py", "-m", "+sweep=grid", "+budget=tiny", "hparams.gamma=0.9",
                   "hparams.epsilon.decay=500", "seeds=2", f"opponents_dir={deep}",
                   f"hydra.sweep.dir={sweep}", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"sweep report: {sweep / 'report.md'}" in r.stdout
    expected = [{"seed": s, "tau": t} for s in (0, 1) for t in (0.005, 0.05)]
    runs = check_sweep(sweep, expected)
    # one folder level per job, named by its number and swept values, short; seed 0 of
    # every configuration first
    names = sorted((p.name for p in sweep.iterdir() if p.is_dir()), key=lambda n: int(n.split("_")[0]))
    assert [n.split("_", 1)[0] for n in names] == ["0", "1", "2", "3"]
    assert [frozenset(n.split("_", 1)[1].split(",")) for n in names] == [
        frozenset({f"seed={s}", "gamma=0.9", "decay=500", "seeds=2", f"tau={t}"})
        for s in (0, 1) for t in (0.005, 0.05)]
    # two worker processes (not this one), and runs overlapping in time: parallel jobs
    windows = [_wandb_window(job) for job, _, _ in runs]
    assert len({w[0] for w in windows}) == 2
    assert any(a[1] < b[2] and b[1] < a[2]
               for i, a in enumerate(windows) for b in windows[i + 1:])
    check_report(sweep, n_runs=4, n_configs=2, n_seeds=2)


def test_optuna_sweep_maximises_the_mean_over_seeds(tmp_path):
    """Each trial's job trains ``seeds`` seeds in turn; its value is the mean of their scores."""
    sweep = tmp_path / "optuna"
    r = run_script("train.py", "-m", "+sweep=optuna", "+budget=tiny", "hydra.sweeper.n_trials=2",
                   "seeds=2", "seed=5", f"hydra.sweep.dir={sweep}", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    means = []
    for job in jobs:
        scores = [kill_margin_score(json.loads((job / f"seed_{s}" / "eval.json").read_text()))
                  for s in (5, 6)]
        record = json.loads((job / "seeds.json").read_text())
        assert record["seeds"] == [5, 6]
        assert record["objective_mean"] == pytest.approx(sum(scores) / 2)
        means.append(record["objective_mean"])
        runs = [json.loads((job / f"seed_{s}" / "wandb_run.json").read_text()) for s in (5, 6)]
        assert runs[0]["config_id"] == runs[1]["config_id"] and runs[0]["id"] != runs[1]["id"]
        assert runs[0]["name"].endswith(",seed=5") and runs[1]["name"].endswith(",seed=6")
        overrides = dict(parse_override(o) for o in
                         yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        assert 0.5 <= overrides["hparams.epsilon.start"] <= 1.0
        assert 0.001 <= overrides["hparams.tau"] <= 0.2
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert results["best_value"] == pytest.approx(max(means))
    assert set(results["best_params"]) == {"hparams.epsilon.start", "hparams.epsilon.end",
                                           "hparams.epsilon.decay", "hparams.tau", "hparams.gamma"}
    out = write_report(sweep, plots=False)
    assert [c.n_seeds for c in out["configs"]] == [2, 2]
    assert max(c.mean for c in out["configs"]) == pytest.approx(results["best_value"])
    assert "Optuna best: value" in (sweep / "report.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None
                    or importlib.util.find_spec("ray") is None,
                    reason="hydra-ray-launcher not installed (pip install -e '.[ray]')")
def test_ray_launcher_local_instance(tmp_path):
    """The same sweep (2 x 2) through the Ray launcher on a local Ray instance."""
    sweep = tmp_path / "ray"
    r = run_script("train.py", "-m", "+sweep=grid", "+budget=tiny", "hparams.tau=0.05", "seed=0",
                   "hydra/launcher=ray_local", f"hydra.sweep.dir={sweep}", timeout=500,
                   env={"RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "Started a local Ray instance" in r.stderr + r.stdout
    expected = [{"seed": 0, "decay": d, "tau": 0.05, "gamma": g} for d in (500, 3000)
                for g in (0.9, 0.99)]
    check_sweep(sweep, expected)


def test_each_job_caps_its_threads():
    """configure_threads(1): torch, the loaded OpenMP / BLAS pools, and the environment."""
    code = (
        "import os, numpy, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from battle_rl.training import configure_threads\n"
        "configure_threads(1)\n"
        "print(torch.get_num_threads(), sorted({p['num_threads'] for p in threadpool_info()}),\n"
        "      [os.environ[v] for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "[1]", "['1',", "'1',", "'1']"]


def test_threads_auto_shares_the_cores_among_the_processes(monkeypatch):
    """threads=auto: the cores this process may use, per process of the machine, at most 4,
    less one for an actor process."""
    from battle_rl.training import resolve_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_threads("auto") == 4  # 8 cores, one process: capped
    assert resolve_threads("auto", devices=4) == 2  # DDP: four ranks share them
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun's count wins
    assert resolve_threads("auto") == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_threads("auto") == 2  # the 2-core machine: both cores
    assert resolve_threads("auto", actors=1) == 1  # play: process: the actor has the other
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_threads("auto", actors=1) == 1  # never none
    assert resolve_threads(1) == 1 and resolve_threads("3") == 3
