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
    cfg = compose(f"+sweep={name}")
    params = cfg.hydra.sweeper.params
    assert math.prod(len(str(v).split(",")) for v in params.values()) == jobs
    assert all(k.startswith("hparams.") for k in params)
    assert cfg.sweep_name == name and cfg.threads == 1
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    assert cfg.hydra.sweep.dir.startswith(f"multirun/{name}/")


def test_optuna_sweep_config_maximises():
    cfg = compose("+sweep=optuna")
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and sw.direction == "maximize"
    assert {"hparams.epsilon.start", "hparams.epsilon.end", "hparams.epsilon.decay",
            "hparams.tau", "hparams.gamma"} == set(sw.params)
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
             train_rewards: list[float] | None = None) -> Path:
    """A job folder as train.py leaves it. ``evals``: (step, train seconds, win rate vs random,
    win rate vs final); ``final``: {opponent: (wins of 30, blue reward)}."""
    d = sweep / f"{num}_{','.join(overrides)}"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides + ["+sweep=grid"]))
    with (d / "eval_history.jsonl").open("w") as f:
        for step, secs, wr, wf in evals:
            table = {o: {"episodes": 10, "win": round(10 * w), "draw": 10 - round(10 * w),
                         "lose": 0, "blue_reward": w - 0.5, "red_reward": 0.0,
                         "blue_kills": 0.0, "red_kills": 0.0}
                     for o, w in (("random", wr), ("final", wf))}
            f.write(json.dumps({"step": step, "eval/win_rate/random": wr,
                                "eval/win_rate/final": wf, "eval/min_win_rate": min(wr, wf),
                                "eval/train_seconds": secs, "table": table}) + "\n")
    if final is not None:
        (d / "eval.json").write_text(json.dumps(
            {o: {"episodes": 30, "win": w, "draw": 30 - w, "lose": 0, "blue_reward": r,
                 "red_reward": -r} for o, (w, r) in final.items()}))
    if train_rewards:
        (d / "csv").mkdir()
        with (d / "csv" / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "train/td_loss", "rollout/blue_reward"])
            for i, r in enumerate(train_rewards):
                w.writerow([i * 50, 0.1, r])
                w.writerow([i * 50 + 1, 0.1, ""])  # rows without the key are skipped
    return d


@pytest.fixture
def synthetic_sweep(tmp_path):
    sweep = tmp_path / "multirun" / "grid" / "2026-01-02_03-04-05"
    fake_job(sweep, 0, ["hparams.tau=0.01", "hparams.gamma=0.9"],
             [(100, 5.0, 0.4, 0.2), (200, 10.0, 1.0, 0.8), (300, 15.0, 1.0, 1.0)],
             {"random": (30, 4.0), "final": (15, 2.0)}, train_rewards=[0.1, 0.5, 0.9])
    fake_job(sweep, 1, ["hparams.tau=0.1", "hparams.gamma=0.9"],
             [(100, 4.0, 0.2, 0.1), (200, 8.0, 0.6, 0.3)],
             {"random": (30, 3.0), "final": (30, 1.0)})
    fake_job(sweep, 2, ["hparams.tau=0.01", "hparams.gamma=0.99"],
             [(100, 6.0, 0.1, 0.0)], {"random": (3, -1.0), "final": (0, -2.0)})
    fake_job(sweep, 10, ["hparams.tau=0.1", "hparams.gamma=0.99"], [], None)  # died early
    return sweep


def read_md_table(md: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return rows[0], rows[1:]


def test_report_table_and_plots_on_synthetic_sweep(synthetic_sweep):
    out = write_report(synthetic_sweep)
    assert out["swept"] == ["hparams.tau", "hparams.gamma"]
    assert out["common"] == {"sweep": "grid"}
    md = (synthetic_sweep / "report.md").read_text()
    header, rows = read_md_table(md)
    assert header[:6] == ["job", "hparams.tau", "hparams.gamma", "win random", "win final",
                          "min win"]
    assert [r[0] for r in rows] == ["0", "1", "2", "10"]  # job order, numerically
    col = {h: i for i, h in enumerate(header)}
    r0, r1, r2, r10 = rows
    assert (r0[col["win random"]], r0[col["win final"]], r0[col["min win"]]) == ("1", "0.5", "0.5")
    assert r1[col["min win"]] == "1" and r2[col["min win"]] == "0"
    # 'won' = the evaluation during training reached 1.0 against every opponent
    assert (r0[col["time to 1 (s)"]], r0[col["updates to 1"]]) == ("15", "300")
    assert r1[col["time to 1 (s)"]] == "—" and r10[col["min win"]] == "—"
    assert r0[col["final reward"]] == "3" and r1[col["final reward"]] == "2"
    assert r0[col["train reward"]] == "0.9" and r1[col["train reward"]] == "—"
    assert "Best job" in md and "**1_hparams.tau=0.1,hparams.gamma=0.9**" in md
    assert "Common overrides: `sweep=grid`" in md
    # a lower target: jobs 0 and 1 reached 0.3 vs every opponent at their second evaluation
    write_report(synthetic_sweep, target=0.3)
    header, rows = read_md_table((synthetic_sweep / "report.md").read_text())
    assert [r[header.index("updates to 0.3")] for r in rows] == ["200", "200", "—", "—"]
    assert rows[1][header.index("time to 0.3 (s)")] == "8"
    with (synthetic_sweep / "report.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["job"] for t in table] == ["0", "1", "2", "10"]
    assert float(table[0]["min win"]) == 0.5 and table[3]["min win"] == ""

    labels = out["labels"]
    assert labels == ["#0 tau=0.01,gamma=0.9", "#1 tau=0.1,gamma=0.9", "#2 tau=0.01,gamma=0.99",
                      "#10 tau=0.1,gamma=0.99"]
    names = {p.name for p in out["plots"]}
    assert names == {"win_rate.png", "reward.png", "final_vs_hparams.tau.png",
                     "final_vs_hparams.gamma.png"}
    for p in out["plots"]:
        assert png_runs(p) == labels
        assert p.name in md


def test_report_cli(synthetic_sweep, capsys):
    assert report_main([str(synthetic_sweep), "--no-plots"]) == 0
    assert "| job |" in capsys.readouterr().out
    assert not (synthetic_sweep / "win_rate.png").exists()
    r = subprocess.run([sys.executable, "-m", "battle_rl.outputs.report", str(synthetic_sweep)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (synthetic_sweep / "win_rate.png").is_file()
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
    its full config (as far as W&B's own files show it: ``wandb_run.json`` is battle-rl's)."""
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
        record = next(offline[0].glob("*.wandb")).read_bytes()
        for text in ("algo:ddqn", "opponent:random", "reward:fighter", run["group"],
                     "opponents_dir", "max_cycles", "batch_size"):
            assert text.encode() in record, text
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["env"]["max_cycles"] == 20 and config["threads"] == 1
        runs.append((job, overrides, config))
    seen = [{k: c["hparams"][k] if k != "decay" else c["hparams"]["epsilon"][k]
             for k in expected[0]} for _, _, c in runs]
    assert sorted(map(json.dumps, seen)) == sorted(map(json.dumps, expected))
    assert len({json.loads((j / "wandb_run.json").read_text())["id"] for j, _, _ in runs}) \
        == len(runs)
    return runs


def check_report(sweep: Path, n: int) -> None:
    r = subprocess.run([sys.executable, "-m", "battle_rl.outputs.report", str(sweep)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    header, rows = read_md_table((sweep / "report.md").read_text())
    assert len(rows) == n and "win random" in header
    assert all(row[header.index("W&B run")] != "—" for row in rows)
    plots = sorted(sweep.glob("*.png"))
    assert {p.name for p in plots} >= {"win_rate.png", "reward.png", "final_vs_hparams.tau.png",
                                       "final_vs_hparams.epsilon.decay.png"}
    for p in plots:
        assert len(png_runs(p)) == n


def test_joblib_sweep_2x2_parallel_wandb_runs_in_one_group(tmp_path):
    """The grid sweep, gamma fixed (2 x 2), tiny budget, 2 joblib processes at once."""
    sweep = tmp_path / "grid"
    # a path-valued override (the course files, wherever they are) stays out of folder names
    deep = tmp_path / "a" / "deeply" / "nested" / "folder" / "of" / "opponents"
    r = run_script("train.py", "-m", "+sweep=grid", "+budget=tiny", "hparams.gamma=0.9",
                   f"opponents_dir={deep}", f"hydra.sweep.dir={sweep}", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    expected = [{"decay": d, "tau": t, "gamma": 0.9} for d in (500, 3000) for t in (0.005, 0.05)]
    runs = check_sweep(sweep, expected)
    # one folder level per job, named by its number and swept values, short
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [n.split("_", 1)[0] for n in names] == ["0", "1", "2", "3"]
    assert {frozenset(n.split("_", 1)[1].split(",")) for n in names} == {
        frozenset({"gamma=0.9", f"decay={d}", f"tau={t}"}) for d in (500, 3000)
        for t in (0.005, 0.05)}
    # two worker processes (not this one), and runs overlapping in time: parallel jobs
    windows = [_wandb_window(job) for job, _, _ in runs]
    assert len({w[0] for w in windows}) == 2
    assert any(a[1] < b[2] and b[1] < a[2]
               for i, a in enumerate(windows) for b in windows[i + 1:])
    check_report(sweep, 4)


def test_optuna_sweep_maximises_the_returned_objective(tmp_path):
    sweep = tmp_path / "optuna"
    r = run_script("train.py", "-m", "+sweep=optuna", "+budget=tiny", "hydra.sweeper.n_trials=2",
                   f"hydra.sweep.dir={sweep}", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    objectives = []
    for job in jobs:
        table = json.loads((job / "eval.json").read_text())
        objectives.append(min(row["win"] / row["episodes"] for row in table.values()))
        overrides = dict(parse_override(o) for o in
                         yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        assert 0.5 <= overrides["hparams.epsilon.start"] <= 1.0
        assert 0.001 <= overrides["hparams.tau"] <= 0.2
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert results["best_value"] == max(objectives)
    assert set(results["best_params"]) == {"hparams.epsilon.start", "hparams.epsilon.end",
                                           "hparams.epsilon.decay", "hparams.tau", "hparams.gamma"}
    write_report(sweep, plots=False)
    assert "Optuna best: value" in (sweep / "report.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None
                    or importlib.util.find_spec("ray") is None,
                    reason="hydra-ray-launcher not installed (pip install -e '.[ray]')")
def test_ray_launcher_local_instance(tmp_path):
    """The same sweep (2 x 2) through the Ray launcher on a local Ray instance."""
    sweep = tmp_path / "ray"
    r = run_script("train.py", "-m", "+sweep=grid", "+budget=tiny", "hparams.tau=0.05",
                   "hydra/launcher=ray_local", f"hydra.sweep.dir={sweep}", timeout=500,
                   env={"RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "Started a local Ray instance" in r.stderr + r.stdout
    expected = [{"decay": d, "tau": 0.05, "gamma": g} for d in (500, 3000) for g in (0.9, 0.99)]
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
    """threads=auto: the cores this process may use, per process of the machine, at most 4."""
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
    assert resolve_threads(1) == 1 and resolve_threads("3") == 3
