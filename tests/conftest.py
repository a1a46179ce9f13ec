"""Shared fixtures: the course opponents folder (skip with the reason where absent), tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPPONENTS = Path(os.environ.get("BATTLE_RL_OPPONENTS_DIR", ROOT.parent / "shared" / "opponents"))
HAVE_OPPONENTS = (OPPONENTS / "red.pt").is_file() and (OPPONENTS / "red_final.pt").is_file()
needs_opponents = pytest.mark.skipif(
    not HAVE_OPPONENTS,
    reason=f"course opponents red.pt / red_final.pt not found in {OPPONENTS} "
    f"(set BATTLE_RL_OPPONENTS_DIR)",
)

# keep every test run off the network and quiet
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def opponents_dir() -> Path:
    if not HAVE_OPPONENTS:
        pytest.skip(f"course opponents not found in {OPPONENTS}")
    return OPPONENTS


def run_script(script: str, *overrides: str, timeout: float = 300, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` from the project root, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("BATTLE_RL_OPPONENTS_DIR", str(OPPONENTS))
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env,
    )


def evaluate_policy_and_checkpoint(run_dir: Path, tmp_path: Path, max_cycles: int) -> dict:
    """``evaluate.py`` on a run's ``policy.pt`` and on its ``checkpoints/last.ckpt`` (2 games
    against random and final each): ``{"policy": eval.json, "ckpt": eval.json}``, plus each
    command's stdout under ``"stdout"``."""
    results, stdout = {}, {}
    for name, path in (("policy", run_dir / "policy.pt"),
                       ("ckpt", run_dir / "checkpoints" / "last.ckpt")):
        ev = tmp_path / f"eval-{name}"
        r = run_script("evaluate.py", f"checkpoint={path}", "episodes=2",
                       f"max_cycles={max_cycles}", "opponents=[random,final]",
                       f"hydra.run.dir={ev}")
        assert r.returncode == 0, r.stderr[-3000:]
        results[name] = json.loads((ev / "eval.json").read_text())
        stdout[name] = r.stdout
    return {**results, "stdout": stdout}


# a run that trains for seconds: short episodes, small buffer, few updates, no final eval
TINY = (
    "threads=1",  # tiny batches: a second torch thread only adds its overhead
    "env.max_cycles=20",
    "trainer.max_steps=30",
    "trainer.log_every_n_steps=10",
    "hparams.buffer_size=2000",
    "hparams.batch_size=32",
    "hparams.warmup=64",
    "eval.every_n_steps=0",
    "eval.final_episodes=0",
    "logger=csv",
    "opponent=random",
)
