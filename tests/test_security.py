"""Opening a policy or checkpoint file never runs code from it.

A malicious pickle (unpickling it creates a marker file) goes to every entry that opens
files; each stops with a one-line error naming the file, and the marker never appears.
Checkpoints written by earlier battle-rl versions (tests/fixtures, made at e0a5506) still load.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from battle_rl.algos.ddqn import DQN
from battle_rl.config import compose_overrides
from battle_rl.errors import ConfigError, PolicyLoadError
from battle_rl.evaluation import run_evaluation
from battle_rl.league import tournament
from battle_rl.league.opponents import make_opponent
from battle_rl.networks import QNetwork, export_policy, load_course_net, load_policy
from battle_rl.resume import find_checkpoint, load_replay, resume_argv
from battle_rl.safe_load import torch_load
from battle_rl.training import SafeCheckpointIO, init_weights, train
from conftest import ROOT, TINY, run_script

FIXTURES = ROOT / "tests" / "fixtures"
REFUSED = re.compile(r"holds Python objects that battle-rl will not unpickle")


class Payload:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture
def evil(tmp_path):
    """Malicious files of every form: ``.pt`` and ``.ckpt`` (torch's zip format), a bare
    pickle, and a folder of course opponents; ``evil["marker"]`` must never appear."""
    marker = tmp_path / "MARKER"
    payload = Payload(marker)
    files = {"marker": marker, "pt": tmp_path / "evil.pt", "ckpt": tmp_path / "evil.ckpt",
             "raw": tmp_path / "raw.pt", "dir": tmp_path / "opponents"}
    torch.save({"cnn.0.weight": payload, "network.4.weight": torch.zeros(1)}, files["pt"])
    torch.save({"state_dict": {}, "hyper_parameters": {"network": payload}, "rollout": {},
                "global_step": 1}, files["ckpt"])
    files["raw"].write_bytes(pickle.dumps(payload, protocol=2))  # torch.save's own protocol
    files["dir"].mkdir()
    for name in ("red.pt", "red_final.pt"):
        shutil.copy(files["pt"], files["dir"] / name)
    return files


def assert_refused(message: str, path, marker) -> None:
    assert REFUSED.search(message), message
    assert str(path) in message and "\n" not in message.strip()
    assert not marker.exists()


def test_the_payload_runs_when_unpickled_plainly(evil):
    """The check of the others: the same bytes do run code through plain pickle."""
    pickle.loads(evil["raw"].read_bytes())
    assert evil["marker"].exists()


@pytest.mark.parametrize("kind", ["pt", "ckpt", "raw"])
def test_loaders_refuse_without_running_it(evil, kind):
    path, marker = evil[kind], evil["marker"]
    for load in (torch_load, load_policy, load_course_net,
                 SafeCheckpointIO().load_checkpoint):
        with pytest.raises(PolicyLoadError) as e:
            load(path)
        assert_refused(str(e.value), path, marker)
    with pytest.raises(ConfigError) as e:  # resume=: before Hydra composes anything
        resume_argv([f"resume={path}"])
    assert_refused(str(e.value), path, marker)
    with pytest.raises(ConfigError) as e:
        find_checkpoint(path)
    assert_refused(str(e.value), path, marker)


def test_pickle_instructions_the_safe_loader_lacks_are_refused_too(evil, tmp_path):
    path = tmp_path / "raw4.pt"  # protocol 4: the restricted unpickler reads only up to 2
    path.write_bytes(pickle.dumps(Payload(evil["marker"]), protocol=4))
    with pytest.raises(PolicyLoadError, match="not a readable PyTorch file"):
        load_policy(path)
    assert not evil["marker"].exists()


@pytest.mark.parametrize("spec, kind", [("course:{pt}", "pt"), ("red:{pt}", "pt"),
                                        ("blue:{pt}", "pt"), ("{pt}", "pt"), ("{ckpt}", "ckpt"),
                                        ("x={raw}", "raw")])
def test_tournament_agents_refuse(evil, spec, kind, tmp_path, capsys):
    out = tmp_path / "t"
    assert tournament.main(["random", spec.format(**evil), "--threads", "1",
                            "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert_refused(err, evil[kind], evil["marker"])
    assert not out.exists()


def test_opponents_and_named_policies_refuse(evil):
    for name in ("pretrained", "final"):  # red.pt / red_final.pt in opponents_dir
        with pytest.raises(PolicyLoadError) as e:
            make_opponent(name, evil["dir"])
        assert_refused(str(e.value), evil["dir"], evil["marker"])
    with pytest.raises(PolicyLoadError) as e:  # +policies.rival=PATH
        make_opponent("rival", evil["dir"], policies={"rival": str(evil["ckpt"])})
    assert_refused(str(e.value), evil["ckpt"], evil["marker"])
    with pytest.raises(PolicyLoadError) as e:  # init_from=PATH
        init_weights(DQN(), str(evil["pt"]))
    assert_refused(str(e.value), evil["pt"], evil["marker"])


@pytest.mark.parametrize("overrides", [
    ["init_from={pt}"],
    ["+policies.rival={ckpt}", "+opponent.weights.rival=1"],
    ["opponents_dir={dir}", "+opponent.weights.pretrained=1"],
])
def test_training_refuses_before_it_starts(evil, overrides, tmp_path):
    cfg = compose_overrides("config", [*TINY, "print_config=false",
                                       *[o.format(**evil) for o in overrides]])
    with pytest.raises(PolicyLoadError) as e:
        train(cfg, tmp_path / "run")
    assert_refused(str(e.value), tmp_path, evil["marker"])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluation_refuses(evil, tmp_path):
    for kind in ("pt", "ckpt"):
        cfg = compose_overrides("evaluate", [f"checkpoint={evil[kind]}", "opponents=[random]"])
        with pytest.raises(PolicyLoadError) as e:
            run_evaluation(cfg, tmp_path / "eval")
        assert_refused(str(e.value), evil[kind], evil["marker"])


def test_entry_points_print_one_line_and_exit_2(evil, tmp_path):
    """As a user would type them: exit status 2, one line on stderr, the marker absent."""
    commands = [
        [str(ROOT / "evaluate.py"), f"checkpoint={evil['pt']}", f"hydra.run.dir={tmp_path}/e"],
        ["-m", "battle_rl.league.tournament", "random", f"course:{evil['pt']}", "--out",
         str(tmp_path / "t")],
        [str(ROOT / "train.py"), *TINY, f"resume={evil['ckpt']}"],
    ]
    procs = [subprocess.Popen([sys.executable, *c], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    for p in procs:  # started together: the three imports overlap
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2, err[-2000:]
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: ") and REFUSED.search(line), err[-2000:]
    assert not evil["marker"].exists()


def test_replay_file_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    np.savez(tmp_path / "replay.npz", step=np.int64(1),
             obs=np.array([Payload(marker)], dtype=object))
    with pytest.raises(ConfigError, match="unreadable"):
        load_replay(None, tmp_path, 1)
    assert not marker.exists()


def test_resume_does_not_replay_overrides_that_pick_code(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "ddqn-e0a5506", run)
    saved = run / ".hydra" / "overrides.yaml"
    original = yaml.safe_load(saved.read_text())
    for bad in ["+hydra.callbacks.x={_target_:os.system,command:'touch m'}",
                "hydra.job.env_set.LD_PRELOAD=/tmp/x.so", "algo._target_=os.system"]:
        saved.write_text(yaml.safe_dump(original + [bad]))
        with pytest.raises(ConfigError, match="does not replay"):
            resume_argv([f"resume={run}"])


def test_torchscript_policies_load_as_torchscript(evil, tmp_path):
    path = export_policy(QNetwork(), tmp_path / "policy.pt")
    assert isinstance(load_policy(path), torch.jit.ScriptModule)
    with pytest.raises(PolicyLoadError, match="TorchScript"):
        load_course_net(path)
    # the payload dressed as TorchScript: torch.jit.load's own unpickler refuses it too
    fake = tmp_path / "fake.pt"
    with zipfile.ZipFile(evil["pt"]) as src, zipfile.ZipFile(fake, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("evil/constants.pkl", src.read("evil/data.pkl"))
        dst.writestr("evil/code/__torch__.py", "")
    with pytest.raises(PolicyLoadError, match="looks like TorchScript but cannot be loaded"):
        load_policy(fake)
    assert not evil["marker"].exists()


def test_no_unsafe_load_remains():
    """Every torch.load of battle-rl goes through battle_rl/safe_load.py, and none of its
    code asks for unrestricted unpickling."""
    sources = [*(ROOT / "battle_rl").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
               *(ROOT / "scripts").rglob("*.py"), ROOT / "train.py", ROOT / "evaluate.py"]
    assert len(sources) > 20
    for src in sources:
        text = src.read_text()
        assert "weights_only=False" not in text, src
        assert "allow_pickle=True" not in text and "pickle.load" not in text, src
        if src.name != "safe_load.py":
            assert "torch.load(" not in text, src


# -- checkpoints of earlier versions (tests/fixtures, written by battle-rl at e0a5506) ------

@pytest.mark.parametrize("algo", ["ddqn", "qmix"])
def test_earlier_checkpoints_still_load(algo):
    ckpt_path = FIXTURES / f"{algo}-e0a5506" / "checkpoints" / "last.ckpt"
    ckpt = torch_load(ckpt_path)  # numpy RNG arrays, omegaconf hyper-parameters
    assert isinstance(ckpt["hyper_parameters"]["network"], dict)
    assert ckpt["hyper_parameters"]["network"]["hidden"] == [8]
    net = load_policy(ckpt_path)  # what evaluate.py checkpoint= and the tournament do
    weights = {k.split(".", 1)[1]: v for k, v in ckpt["state_dict"].items()
               if k.startswith(("q_net.", "agent_net."))}
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())
    assert find_checkpoint(ckpt_path.parent.parent) == ckpt_path


def test_resume_keeps_the_runs_saved_values_where_the_defaults_changed(tmp_path):
    """A run resumed after an upgrade that changed a default goes on with its own value (from
    its .hydra/config.yaml); the new command line still wins; code keys are not replayed."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "ddqn-e0a5506", run)
    original = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    saved = OmegaConf.to_container(compose_overrides("config", original), resolve=False)
    saved.pop("hydra", None)
    saved["hparams"]["gamma"], saved["trainer"]["max_time"] = 0.5, "00:00:07:00"
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    argv = resume_argv([f"resume={run}"])
    assert argv[:2] == ["++hparams.gamma=0.5", "++trainer.max_time='00:00:07:00'"]
    cfg = compose_overrides("config", argv)
    assert cfg.hparams.gamma == 0.5 and cfg.trainer.max_time == "00:00:07:00"
    argv = resume_argv([f"resume={run}", "hparams.gamma=0.7"])
    assert compose_overrides("config", argv).hparams.gamma == 0.7
    assert "++trainer.max_time='00:00:07:00'" in argv
    # options added since the run was saved count at the value they had before they existed
    # (whatever today's defaults are); the new command line still wins
    saved["reward"].pop("hurt")
    saved["algo"]["network"].pop("action_mask")
    saved["algo"]["network"].pop("channels", None)
    saved["hparams"].pop("explore_with", None)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    cfg = compose_overrides("config", resume_argv([f"resume={run}"]))
    assert cfg.reward.hurt == 0.0 and cfg.algo.network.action_mask is False
    assert cfg.algo.network.channels is None and cfg.hparams.explore_with == "random"
    argv = resume_argv([f"resume={run}", "algo.network.action_mask=true"])
    assert compose_overrides("config", argv).algo.network.action_mask is True
    saved["algo"]["_target_"] = "os.system"
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match="algo._target_, which battle-rl does not replay"):
        resume_argv([f"resume={run}"])


def test_earlier_checkpoint_resumes_with_its_replay_and_pool(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "ddqn-e0a5506", run)
    # the fixture keeps only its overrides (no .hydra/config.yaml to pin its values from): it
    # resumes with the recipe of its day named, +experiment=course (the default run then)
    r = run_script("train.py", f"resume={run}", "trainer.max_steps=33", "+experiment=course",
                   "trainer.enable_progress_bar=false")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at step 30: epsilon 0.980367, 82 transitions" in r.stdout
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # plain types now
    assert saved["global_step"] == 33
    pool = saved["rollout"]["opponent"]["opponents"][1]
    assert [s["step"] for s in pool["snapshots"]] == [20, 30]
    assert isinstance(saved["hyper_parameters"]["network"], dict)
    # it predates the dueling head: it resumes as what it was, not as a dueling network; the
    # refusal comes before Hydra starts, so the run's saved command is left as it was
    saved_command = (run / ".hydra" / "overrides.yaml").read_text()
    r = run_script("train.py", f"resume={run}", "trainer.max_steps=36",
                   "algo.network.dueling=true", "trainer.enable_progress_bar=false")
    assert r.returncode == 2
    assert "trained with network={'conv_channels': [2, 2], 'hidden': [8], 'dueling': False, " \
        "'action_mask': False, 'channels': None}" in r.stderr.strip().splitlines()[-1]
    assert (run / ".hydra" / "overrides.yaml").read_text() == saved_command
