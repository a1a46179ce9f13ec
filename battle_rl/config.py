"""Checks on the composed configuration, run before anything is built.

Every problem is reported as one line naming the key, the value and what is allowed; the entry
points print it and exit with status 2, without a traceback (``debug=true`` shows one).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
OPPONENT_NAMES = ("random", "pretrained", "final", "scripted", "passive", "passive_strict",
                  "self_play", "champion")
# self-play needs a learner to copy: a training opponent only
EVAL_OPPONENT_NAMES = tuple(n for n in OPPONENT_NAMES if n != "self_play")
SELF_PLAY_SAMPLING = ("latest", "uniform", "win_rate")
# Lightning's script launcher re-runs train.py per rank; strategies that pickle the learner into
# spawned processes cannot carry the game with it
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true")
# the learner's arithmetic (Lightning's names); acting, evaluation and policy.pt stay float32
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
SWEEPS_DIR = CONF_DIR.parent / "multirun_sweeps"


from battle_rl.errors import ConfigError  # noqa: F401 (re-exported)


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def _check(cfg, key, ok, allowed):
    value = _get(cfg, key)
    if value is None:
        return
    try:
        good = bool(ok(value))
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


# the policies exploring agents follow (battle_rl.algos.ddqn.exploration_guide)
EXPLORE_WITH = ("random", "scripted")


def validate_train(cfg: DictConfig) -> None:
    """Ranges of the training configuration."""
    validate_env(cfg)
    h = "hparams"
    unit = lambda x: 0.0 <= float(x) <= 1.0  # noqa: E731
    _check(cfg, f"{h}.epsilon.start", unit, "epsilon must be in [0, 1]")
    _check(cfg, f"{h}.epsilon.end", unit, "epsilon must be in [0, 1]")
    if _get(cfg, f"{h}.epsilon.end") is not None and _get(cfg, f"{h}.epsilon.start") is not None:
        _check(cfg, f"{h}.epsilon.end", lambda x: x <= cfg[h].epsilon.start,
               f"must be <= hparams.epsilon.start={cfg[h].epsilon.start}")
    _check(cfg, f"{h}.epsilon.decay", lambda x: float(x) >= 0, "must be >= 0")
    _check(cfg, f"{h}.epsilon.unit", lambda x: x in ("cycle", "episode"),
           "one of 'cycle', 'episode'")
    _check(cfg, f"{h}.gamma", lambda x: 0.0 <= float(x) < 1.0, "gamma must be in [0, 1)")
    _check(cfg, f"{h}.tau", lambda x: 0.0 < float(x) <= 1.0, "tau must be in (0, 1]")
    _check(cfg, f"{h}.lr", lambda x: float(x) > 0, "the learning rate must be > 0")
    _check(cfg, f"{h}.batch_size", lambda x: int(x) == x and x > 0, "a positive integer")
    _check(cfg, f"{h}.buffer_size", lambda x: int(x) == x and x >= 163,
           "an integer >= 163 (two cycles of a full team)")
    _check(cfg, f"{h}.batch_size", lambda x: x <= cfg[h].buffer_size,
           f"must be <= hparams.buffer_size={_get(cfg, f'{h}.buffer_size')}")
    _check(cfg, f"{h}.updates_per_cycle", lambda x: float(x) > 0, "must be > 0")
    _check(cfg, f"{h}.n_step", lambda x: int(x) == x and 1 <= x <= 50, "an integer in [1, 50]")
    _check(cfg, f"{h}.warmup", lambda x: int(x) == x and x >= 0, "an integer >= 0")
    _check(cfg, f"{h}.max_grad_norm", lambda x: float(x) > 0, "must be > 0")
    _check(cfg, f"{h}.episodes", lambda x: int(x) == x and x >= 1, "an integer >= 1 (or null)")
    _check(cfg, f"{h}.lr_decay.after", lambda x: 0.0 <= float(x) < 1.0,
           "a fraction of the budget in [0, 1), or null: off")
    _check(cfg, f"{h}.lr_decay.to", lambda x: 0.0 <= float(x) <= 1.0,
           "a fraction of hparams.lr in [0, 1]")
    _check(cfg, f"{h}.weight_average.after", lambda x: 0.0 <= float(x) < 1.0,
           "a fraction of the budget in [0, 1), or null: off")
    for key in ("lr_decay", "weight_average"):
        if (_get(cfg, f"{h}.{key}.after") is not None
                and (_get(cfg, "trainer.max_steps") or -1) <= 0
                and _get(cfg, "trainer.max_time") is None):
            raise ConfigError(f"hparams.{key}.after needs a budget to take a fraction of: set "
                              f"trainer.max_steps or trainer.max_time")
    _check(cfg, "eval.every_n_steps", lambda x: int(x) == x and x >= 0, "an integer >= 0 (0: off)")
    _check(cfg, "eval.episodes", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "eval.workers", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "eval.final_episodes", lambda x: int(x) == x and x >= 0, "an integer >= 0")
    _check(cfg, "eval.rematch_episodes", lambda x: int(x) == x and x >= 0,
           "an integer >= 0 (0: off)")
    _check(cfg, "eval.video_every", lambda x: int(x) == x and x >= 0, "an integer >= 0 (0: off)")
    _check(cfg, "eval.stop_win_rate", lambda x: 0.0 < float(x) <= 1.0, "in (0, 1] or null")
    _check(cfg, "eval.max_train_seconds", lambda x: float(x) > 0, "seconds > 0, or null")
    _check(cfg, "eval.sides", lambda x: len(x) > 0 and set(x) <= {"blue", "red"},
           "a list of 'blue' and/or 'red', e.g. [blue, red]")
    _check(cfg, "threads", lambda x: x == "auto" or (int(x) == x and x >= 1),
           "'auto' or an integer >= 1")
    _check(cfg, "play", lambda x: x in ("inline", "process"),
           "inline (in the learner's process) or process (a second one, while it updates)")
    _check(cfg, "trainer.log_every_n_steps", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "checkpoint_every", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "trainer.max_steps", lambda x: int(x) == x and x >= -1,
           "an integer >= 1 (or -1: no limit)")
    _check(cfg, "trainer.max_time", _is_duration, "a duration DD:HH:MM:SS, e.g. 00:00:05:00")
    _check(cfg, "trainer.strategy", lambda x: x in STRATEGIES,
           f"one of {', '.join(STRATEGIES)} (several processes: trainer=ddp)")
    _check(cfg, "trainer.precision", lambda x: str(x) in PRECISIONS,
           "one of 32-true, bf16-mixed, 16-mixed (a GPU's)")
    if (str(_get(cfg, "trainer.precision")) == "16-mixed"
            and _get(cfg, "trainer.accelerator") == "cpu"):
        raise ConfigError("trainer.precision=16-mixed needs trainer.accelerator=gpu; on a CPU "
                          "use bf16-mixed")
    named = tuple(_get(cfg, "policies") or {})
    for name in named:
        if name in OPPONENT_NAMES:
            raise ConfigError(f"policies.{name}: '{name}' is a built-in opponent; name the "
                              f"policy file otherwise")
    if _get(cfg, "eval.opponents") is not None:
        for name in cfg.eval.opponents:
            _check_eval_opponent("eval.opponents", name, named)
    for name, w in (_get(cfg, "opponent.weights") or {}).items():
        if name not in OPPONENT_NAMES + named:
            raise ConfigError(f"opponent.weights.{name}: unknown opponent "
                              f"(choose from: {', '.join(OPPONENT_NAMES + named)}; a policy "
                              f"file needs +policies.{name}=PATH)")
        _check(cfg, f"opponent.weights.{name}", lambda x: float(x) >= 0, "a weight >= 0")
    _check(cfg, "self_play.every_n_steps", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "self_play.pool_size", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "self_play.sampling", lambda x: x in SELF_PLAY_SAMPLING,
           "one of " + ", ".join(SELF_PLAY_SAMPLING))
    _check(cfg, "reward.approach", lambda x: float(x) >= 0, "a weight >= 0 (0: off)")
    _check(cfg, "reward.hurt", lambda x: float(x) <= 0, "a weight <= 0: a cost per hit taken "
           "(0: off)")
    _check(cfg, "hparams.both_teams", lambda x: isinstance(x, bool), "true or false")
    _check(cfg, "hparams.flip_y", lambda x: isinstance(x, bool), "true or false")
    _check(cfg, "hparams.explore_with", lambda x: x in EXPLORE_WITH,
           "one of " + ", ".join(EXPLORE_WITH))
    _check(cfg, "hparams.red_share", unit, "the share of episodes played as red, in [0, 1]")
    _check(cfg, "algo.agent_loss", lambda x: float(x) >= 0, "a weight >= 0 (0: team loss only)")
    _check(cfg, "algo.team_reward", lambda x: x in ("sum", "mean"), "one of 'sum', 'mean'")
    _check(cfg, "algo.temperature", lambda x: float(x) > 0, "the Boltzmann temperature, > 0")
    if _get(cfg, "hparams.both_teams"):
        _check(cfg, f"{h}.buffer_size", lambda x: x >= 325,
               "an integer >= 325 with hparams.both_teams=true (two cycles of both teams)")
    _check_hparams_family(cfg)
    _check(cfg, f"{h}.rollout_cycles", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, f"{h}.epochs", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, f"{h}.minibatches", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, f"{h}.gae_lambda", unit, "in [0, 1]")
    _check(cfg, f"{h}.clip", lambda x: float(x) > 0, "must be > 0 (e.g. 0.2)")
    _check(cfg, f"{h}.ent_coef", lambda x: float(x) >= 0, "a weight >= 0")
    _check(cfg, f"{h}.vf_coef", lambda x: float(x) > 0, "a weight > 0")
    _check(cfg, f"{h}.clip_vloss", lambda x: isinstance(x, bool), "true or false")
    _check(cfg, f"{h}.norm_adv", lambda x: isinstance(x, bool), "true or false")
    _check(cfg, "algo.critic", lambda x: x in ("local", "central"),
           "one of 'local' (IPPO), 'central' (MAPPO)")


# the hparams keys of the on-policy learners (conf/hparams/ppo.yaml)
PPO_HPARAMS = ("rollout_cycles", "epochs", "minibatches", "gae_lambda", "clip", "ent_coef",
               "vf_coef")


def _check_hparams_family(cfg: DictConfig) -> None:
    """PPO needs the PPO hparams; the replay learners cannot use them; the options of single
    agents' Q-learning (the dueling head, the rollout's mirrors) need such a learner."""
    target, hp = str(_get(cfg, "algo._target_") or ""), _get(cfg, "hparams")
    if hp is None or not target:
        return
    name = _get(cfg, "algo.name")
    if target.endswith(".ppo.PPO"):
        missing = [k for k in PPO_HPARAMS if k not in hp]
        if missing:
            raise ConfigError(f"algo={name} needs the PPO hyperparameters (hparams=ppo); "
                              f"hparams has no {', '.join(missing)}")
    elif "rollout_cycles" in hp:
        raise ConfigError(f"algo={name} learns from a replay buffer: the PPO hyperparameters "
                          f"(hparams=ppo) are for algo=ippo / mappo; choose e.g. hparams=fast")
    single_agent_q = target.endswith((".ddqn.DQN", ".mfq.MFQ"))
    for key in ("dueling", "action_mask"):  # options of the single agents' Q-networks
        if _get(cfg, f"algo.network.{key}") and not single_agent_q:
            raise ConfigError(f"algo.network.{key}=true is not available for algo={name}: it "
                              f"is an option of the Q-networks of algo=ddqn, dqn and mfq")
    channels = _get(cfg, "algo.network.channels")
    if channels is not None:
        if not target.endswith(".ddqn.DQN"):
            raise ConfigError(f"algo.network.channels is not available for algo={name}: it is "
                              f"an option of the Q-network of algo=ddqn and dqn")
        try:
            chosen = [int(c) for c in channels]
        except (TypeError, ValueError):
            chosen = []
        if not chosen or sorted(set(chosen)) != chosen or not 0 <= chosen[0] <= chosen[-1] <= 4:
            raise ConfigError(f"algo.network.channels={channels} is not allowed: distinct "
                              f"observation channels 0-4 in increasing order, e.g. [0,2,4]")
    if hp.get("explore_with", "random") != "random" and not single_agent_q:
        raise ConfigError(f"hparams.explore_with={hp.get('explore_with')} is not available for "
                          f"algo={name}: it guides the epsilon-greedy exploration of algo=ddqn, "
                          f"dqn and mfq")
    for key in ("flip_y", "red_share"):  # the rollout's mirrors of single agents' rows
        value = hp.get(key)
        if value and not single_agent_q:
            shown = str(value).lower() if isinstance(value, bool) else value
            raise ConfigError(f"hparams.{key}={shown} is not available for algo={name}: it "
                              f"mirrors single agents' transitions (algo=ddqn, dqn or mfq)")


def _check_eval_opponent(key: str, name: str, named: tuple = ()) -> None:
    if name in named:
        return
    if name == "self_play":
        raise ConfigError(f"{key}: 'self_play' is a training opponent only (it needs a "
                          f"learner to copy); evaluate against an exported snapshot with "
                          f"python -m battle_rl.league.tournament")
    if name not in EVAL_OPPONENT_NAMES:
        raise ConfigError(f"{key}: unknown opponent {name!r} "
                          f"(choose from: {', '.join(EVAL_OPPONENT_NAMES + named)})")


def _is_duration(x) -> bool:
    parts = str(x).split(":")
    return len(parts) == 4 and all(p.isdigit() for p in parts) and any(int(p) for p in parts)


def validate_eval(cfg: DictConfig) -> None:
    """Ranges of the evaluation configuration (evaluate.py)."""
    validate_env(cfg)
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a policy.pt, a .ckpt or a run directory")
    if not Path(os.path.abspath(str(cfg.checkpoint))).exists():
        raise ConfigError(f"checkpoint not found: {cfg.checkpoint}")
    _check(cfg, "episodes", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "max_cycles", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "n_envs", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "workers", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "threads", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    if not cfg.opponents:
        raise ConfigError("opponents=[] is not allowed: name at least one of "
                          + ", ".join(EVAL_OPPONENT_NAMES))
    for name in cfg.opponents:
        _check_eval_opponent("opponents", name)


def validate_env(cfg: DictConfig) -> None:
    _check(cfg, "env.max_cycles", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "env.map_size", lambda x: int(x) == x and 20 <= x <= 500,
           "an integer in [20, 500] (smaller maps cannot hold 81 agents per team)")
    _check(cfg, "seed", lambda x: int(x) == x and x >= 0, "an integer >= 0")


def check_group_choices(overrides: list[str], config_dirs: list[Path] | None = None) -> None:
    """Unknown options of a config group (``algo=nope``), comma sweeps included; the groups
    are those of the config folders (conf/, or ``-cp`` / ``--config-dir``) and the sweep groups
    of multirun_sweeps/ (``+sweep=...``, ``+budget=...``)."""
    dirs = [*(config_dirs or [CONF_DIR]), SWEEPS_DIR]
    groups = {p.name for d in dirs if d.is_dir() for p in d.iterdir()
              if p.is_dir() and p.name not in ("hydra", "__pycache__")}
    for arg in overrides:
        if "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or any(ch in value for ch in "()[]{}*$"):
            continue
        options = sorted({p.stem for d in dirs for p in (d / key).glob("*.yaml")
                          if not p.stem.startswith("_")})  # _name: a part, not an option
        for choice in value.split(","):
            if choice and choice != "null" and choice not in options:
                raise ConfigError(f"{key}={choice!r} is not an option of '{key}' "
                                  f"(choose from: {', '.join(options)})")


def search_path(calling_file: str | None = None, config_path: str | None = None,
                config_dir: str | None = None):
    """Hydra's config search path, built as ``@hydra.main`` builds it: the script's
    ``config_path`` (or ``-cp``, relative to the script), plus ``--config-dir``."""
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    if calling_file is None or config_path is None:
        calling_file, config_path = str(CONF_DIR.parent / "train.py"), CONF_DIR.name
    path = create_automatic_config_search_path(calling_file, None, config_path)
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise ConfigError(f"--config-dir={config_dir}: no such folder")
        path.prepend(provider="command-line", path=f"file://{folder}",
                     anchor=SearchPathQuery(provider="schema"))
    return path


def config_dirs(path) -> list[Path]:
    """The local folders of a search path (the main one and ``--config-dir``)."""
    return [Path(e.path.removeprefix("file://")) for e in path.get_path()
            if e.provider in ("main", "command-line") and not e.path.startswith("pkg://")]


def compose_overrides(config_name: str, overrides: list[str], path=None) -> DictConfig:
    """Compose the configuration as Hydra will (``path``: its search path, default conf/),
    turning its errors into one line."""
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from hydra.errors import OverrideParseException
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    path = path if path is not None else search_path()
    check_group_choices(overrides, config_dirs(path))
    try:
        hydra = Hydra.create_main_hydra2(task_name="battle_rl", config_search_path=path)
        try:
            cfg = hydra.compose_config(config_name, overrides, run_mode=RunMode.RUN)
        finally:
            GlobalHydra.instance().clear()
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the override: {str(e).splitlines()[0]}") from None
    except MissingConfigException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except ConfigCompositionException as e:
        msg = str(e)
        if msg.startswith("Could not override"):
            key = msg.split("'")[1]
            raise ConfigError(f"{key}: no such key (check the spelling; `+{key}=...` adds a "
                              f"new key)") from None
        raise ConfigError(msg.splitlines()[0]) from None
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def check_creatable(key: str, path: str) -> None:
    """Can the output folder be created and written? (Leaves nothing behind.)"""
    if "${" in path:
        return  # interpolated (e.g. ${now:...}): Hydra resolves it later
    if int(os.environ.get("LOCAL_RANK", "0")) > 0:
        return  # torchrun's other ranks: rank 0 checks (at once, they would race on the probe)
    # quoted, as Lightning's DDP launcher passes it to the processes it starts
    target = Path(os.path.abspath(path.strip("\"'")))
    created = []
    try:
        for d in [*reversed(target.parents), target]:
            if not d.exists():
                d.mkdir()
                created.append(d)
        probe = target / ".battle-rl-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{key}={path} is not writable: {e.strerror}") from None
    finally:
        for d in reversed(created):
            d.rmdir()


# Hydra flags that only show something (help, the configuration, information): no job runs
SHOW_ONLY = ("help", "hydra_help", "version", "cfg", "info", "shell_completion",
             "experimental_rerun")


def precheck(config_name: str, args, validator, calling_file: str | None = None,
             config_path: str | None = None) -> None:
    """Everything that can be checked before Hydra starts (and creates any folder).

    ``args``: the command line as Hydra's own parser reads it (``hydra._internal.utils.
    get_args_parser``). Flags that only show something are Hydra's business; otherwise the
    overrides are composed with the same search path (``-cp``, ``-cn``, ``--config-dir``).
    Single runs are composed and validated in full; in a multirun the group options are
    checked and each job validates its own values.
    """
    if any(getattr(args, flag, None) for flag in SHOW_ONLY):
        return
    overrides = list(args.overrides)
    for arg in overrides:
        if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")):
            check_creatable(*arg.split("=", 1))
    path = search_path(calling_file, args.config_path or config_path, args.config_dir)
    if args.multirun:
        check_group_choices(overrides, config_dirs(path))
        return
    cfg = compose_overrides(args.config_name or config_name, overrides, path)
    validator(cfg)


MAX_JOB_NAME = 60  # characters of a sweep job's folder name after its number


def job_dir_name(num, overrides, exclude=()) -> str:
    """A sweep job's folder (``hydra.sweep.subdir``): its number and the values of its
    overrides, short keys, paths left out (``3_decay=500,tau=0.05``): one level, short."""
    parts = []
    for arg in overrides:
        key, _, value = str(arg).partition("=")
        key, value = key.lstrip("+~"), value.replace("\\", "")  # sweepers escape ':' ','
        if key.startswith("hydra") or key in exclude or "/" in value or os.sep in value:
            continue
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))[:MAX_JOB_NAME].rstrip(",")
    return f"{num}_{name}" if name else str(num)


def native_bf16(accelerator: str = "cpu") -> bool | None:
    """Does the learner's device compute bfloat16 in hardware (a CPU with AVX512-BF16 or AMX,
    a GPU that supports it)? None where this torch cannot tell."""
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return None


def fast_precision(accelerator: str = "cpu") -> str:
    """``trainer.precision`` for speed: bf16-mixed where bfloat16 is native, else 32-true
    (emulated bfloat16 is slower than float32)."""
    return "bf16-mixed" if native_bf16(str(accelerator)) else "32-true"


def asset(name: str) -> str:
    """The absolute path of a file shipped in ``battle_rl/assets`` (a recipe's fixed rival)."""
    return str(Path(__file__).resolve().parent / "assets" / name)


# registered wherever battle_rl.config is imported (the entry points, and so every launcher's
# job process): hydra.sweep.subdir in conf/config.yaml; trainer.precision of DDQN's recipe;
# the champion recipe's previous champion
OmegaConf.register_new_resolver("battle_rl.job_dir", job_dir_name, replace=True)
OmegaConf.register_new_resolver("battle_rl.fast_precision", fast_precision, replace=True)
OmegaConf.register_new_resolver("battle_rl.asset", asset, replace=True)


def fail(message: str, code: int = 2):
    """Print one line to stderr and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get("BATTLE_RL_DEBUG") == "1" or "debug=true" in argv
