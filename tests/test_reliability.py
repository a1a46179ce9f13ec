"""Resume after a real SIGKILL, clean Ctrl-C, one-line errors for bad input, determinism."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import OPPONENTS, ROOT, TINY, run_script

# small and quick, but long enough to be killed part way
KILLABLE = [o for o in TINY if not o.startswith("trainer.max_steps")] + [
    "checkpoint_every=25", "trainer.max_steps=100000",
]


def start_training(*overrides: str) -> subprocess.Popen:
    env = dict(os.environ, BATTLE_RL_OPPONENTS_DIR=str(OPPONENTS), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(path, min_step: int, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if path.is_file():
            try:
                if torch.load(path, map_location="cpu", weights_only=True)["global_step"] >= min_step:
                    return
            except Exception:  # caught mid-write by our reader: try again
                pass
        time.sleep(0.3)
    raise TimeoutError(f"no checkpoint at step >= {min_step}")


def test_sigkill_then_resume_continues_from_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = start_training(*KILLABLE, f"hydra.run.dir={run}")
    try:
        wait_for_checkpoint(ckpt, 50, proc)
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
        proc.wait()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    step = saved["global_step"]
    rollout = saved["rollout"]
    from battle_rl.data import EpsilonSchedule
    from battle_rl.resume import REPLAY_FILE
    import numpy as np

    from battle_rl.config import compose_overrides

    epsilon = compose_overrides("config", KILLABLE).hparams.epsilon
    eps = EpsilonSchedule(start=epsilon.start, end=epsilon.end, decay=epsilon.decay)(
        rollout["cycles"])
    with np.load(run / "checkpoints" / REPLAY_FILE) as replay:
        buffered = int(replay["ready"][: int(replay["size"])].sum())

    r = run_script("train.py", f"resume={run}", f"trainer.max_steps={step + 30}")
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("resumed at step"))
    m = re.match(r"resumed at step (\d+): epsilon ([\d.]+), (\d+) transitions", line)
    assert int(m.group(1)) == step
    assert float(m.group(2)) == pytest.approx(eps, abs=1e-6)
    assert int(m.group(3)) == buffered
    final = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert final["global_step"] == step + 30
    assert final["rollout"]["cycles"] > rollout["cycles"]
    assert r.stdout.strip().splitlines()[-1] == str(run / "policy.pt")
    # the metrics of both parts are in the one file of the run
    steps = [int(row["step"]) for row in csv.DictReader(open(run / "csv" / "metrics.csv"))]
    assert min(steps) < step < max(steps)


def test_ctrl_c_stops_cleanly_and_saves(tmp_path):
    run = tmp_path / "run"
    proc = start_training(*KILLABLE, f"hydra.run.dir={run}")
    try:
        wait_for_checkpoint(run / "checkpoints" / "last.ckpt", 25, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert out.strip().splitlines()[-1] == str(run / "policy.pt")
    torch.jit.load(str(run / "policy.pt"))
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] >= 25


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path):
    run = tmp_path / "run"
    # a reward that overflows float32 makes the TD loss infinite
    r = run_script("train.py", *TINY, "checkpoint_every=5", "reward.step_reward=1e39",
                   f"hydra.run.dir={run}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: non-finite TD loss or Q value")
    assert "Traceback" not in r.stderr
    assert not (run / "policy.pt").exists()


TRAIN_BAD = [
    (["algo=nope"], "algo='nope' is not an option"),
    (["reward=nope"], "reward='nope' is not an option"),
    (["hparams=nope"], "hparams='nope' is not an option"),
    (["logger=nope"], "logger='nope' is not an option"),
    (["hparams.epsilon.start=1.5"], "hparams.epsilon.start=1.5"),
    (["hparams.epsilon.end=-0.1"], "hparams.epsilon.end=-0.1"),
    (["hparams.epsilon.start=0.2", "hparams.epsilon.end=0.5"], "must be <= hparams.epsilon.start"),
    (["hparams.epsilon.unit=week"], "hparams.epsilon.unit"),
    (["hparams.tau=0"], "tau must be in (0, 1]"),
    (["hparams.tau=1.5"], "tau must be in (0, 1]"),
    (["hparams.gamma=1.0"], "gamma must be in [0, 1)"),
    (["hparams.batch_size=0"], "hparams.batch_size=0"),
    (["hparams.batch_size=4096", "hparams.buffer_size=1000"], "must be <= hparams.buffer_size"),
    (["hparams.lr=-1"], "learning rate must be > 0"),
    (["hparams.lr=abc"], "hparams.lr='abc'"),
    (["hparams.lrr=0.1"], "hparams.lrr: no such key"),
    (["env.max_cycles=0"], "env.max_cycles=0"),
    (["env.map_size=10"], "env.map_size=10"),
    (["seed=-1"], "seed=-1"),
    (["threads=0"], "threads=0"),
    (["trainer.max_time=soon"], "trainer.max_time='soon'"),
    (["+opponent.weights.boss=1"], "opponent.weights.boss: unknown opponent"),
    (["eval.opponents=[random,boss]"], "unknown opponent 'boss'"),
    (["opponent=pretrained", "opponents_dir=/nonexistent"], "needs red.pt in opponents_dir"),
    (["logger=wandb", "logger.mode=online"], "needs a W&B API key"),
    (["resume=/nonexistent/run"], "no such file or directory"),
    (["hydra.run.dir=/proc/forbidden"], "is not writable"),
    (["hparams.lr=[1"], "cannot parse the override"),
    (["init_from=/nonexistent/policy.pt"], "init_from=/nonexistent/policy.pt: no such file"),
    (["+opponent.weights.rival=1"], "a policy file needs +policies.rival=PATH"),
    (["algo=vdn", "algo.agent_loss=-1"], "algo.agent_loss=-1 is not allowed"),
    (["algo=qmix", "algo.team_reward=max"], "algo.team_reward='max' is not allowed"),
]


@pytest.mark.parametrize("args,expected", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_train_bad_input(tmp_path, args, expected):
    run = tmp_path / "run"
    overrides = list(args) if any(a.startswith("hydra.run.dir") for a in args) else \
        [*args, f"hydra.run.dir={run}"]
    env = {"WANDB_API_KEY": "", "NETRC": str(tmp_path / "no-netrc")}
    r = run_script("train.py", *overrides, timeout=120, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    # nothing written that a later good run would trip over
    assert not run.exists() or not any(p.suffix in (".pt", ".ckpt") for p in run.rglob("*"))


def test_bad_checkpoint_files_for_resume_and_evaluate(tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x04garbage")
    cases = [
        ("train.py", [f"resume={corrupt}"], "not a readable PyTorch file"),
        ("train.py", [f"resume={OPPONENTS / 'red.pt'}"], "is a course network"),
        ("evaluate.py", [f"checkpoint={corrupt}"], "not a readable PyTorch file"),
        ("evaluate.py", [f"checkpoint={tmp_path / 'missing.pt'}"], "checkpoint not found"),
        ("evaluate.py", ["episodes=0", f"checkpoint={corrupt}"], "episodes=0"),
        ("evaluate.py", [], "checkpoint=PATH is required"),
        ("evaluate.py", [f"checkpoint={corrupt}", "opponents=[boss]"], "unknown opponent 'boss'"),
    ]
    if not (OPPONENTS / "red.pt").is_file():
        cases = [c for c in cases if "course" not in c[2]]
    for script, args, expected in cases:
        r = run_script(script, *args, f"hydra.run.dir={tmp_path / 'out'}", "opponents_dir=/x"
                       if script == "evaluate.py" and "boss" in str(args) else "debug=false",
                       timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and expected in lines[0], (script, args, r.stderr)


def test_debug_switch_shows_traceback(tmp_path):
    r = run_script("train.py", "resume=/nonexistent/run", f"hydra.run.dir={tmp_path}",
                   env={"BATTLE_RL_DEBUG": "1"}, timeout=60)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_same_seed_same_metrics(tmp_path):
    """Two runs with one seed log identical numbers (speed figures aside)."""
    def metrics(name):
        run = tmp_path / name
        r = run_script("train.py", *TINY, "opponent=mix" if (OPPONENTS / "red.pt").is_file()
                       else "opponent=random", "seed=7",
                       f"hydra.run.dir={run}")
        assert r.returncode == 0, r.stderr[-2000:]
        rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]

    a, b = metrics("a"), metrics("b")
    assert len(a) >= 3 and a == b
    assert len({row["train/td_loss"] for row in a}) > 1  # real, changing numbers
