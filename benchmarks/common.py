"""Shared bits of the benchmark scripts: config composition, machine facts, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
OPPONENTS = Path(os.environ.get("BATTLE_RL_OPPONENTS_DIR", ROOT.parent / "shared" / "opponents"))


def compose(overrides: list[str]):
    """The configuration train.py would run with these overrides."""
    from battle_rl.config import compose_overrides, validate_train

    cfg = compose_overrides("config", [f"opponents_dir={OPPONENTS}", *overrides])
    validate_train(cfg)
    return cfg


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M")}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    print(f"wrote {path}", flush=True)
    return path


def have_opponents() -> bool:
    return (OPPONENTS / "red.pt").is_file() and (OPPONENTS / "red_final.pt").is_file()


def require_opponents() -> None:
    if not have_opponents():
        print(f"skipped: the course opponents red.pt / red_final.pt are not in {OPPONENTS} "
              f"(set BATTLE_RL_OPPONENTS_DIR)")
        sys.exit(0)
