"""The documentation cannot rot: every shell command in README.md and docs/*.md is checked,
and every link between the pages and to the repository's files resolves.

Commands are the lines of fenced code blocks marked ``bash``, ``sh``, ``shell`` or ``console``
(backslash continuations joined, ``&&``/``;``/``|`` split, ``#`` comments dropped):

- Hydra applications (``python train.py ...``, ``python evaluate.py ...``, also behind
  ``torchrun`` or ``srun``) must compose, as ``--cfg job`` would: the overrides are parsed by
  Hydra's own command-line parser and composed in-process with Hydra's compose machinery and
  the applications' search path (a multirun composes its sweep configuration, comma sweeps
  included). In-process composition keeps this test at a second or two for all of them.
- Every other program must answer ``--help`` (once per distinct program and subcommand);
  ``bash FILE`` must name a script that ``bash -n`` parses. Shell built-ins (``.``, ``export``)
  are skipped, and so are cluster tools that need a cluster (``srun``, ``sbatch``).

Links: ``[text](target)`` and ``![alt](target)`` in README.md, CHANGELOG.md, docs/*.md and
benchmarks/agents/README.md: a relative target must exist, and a ``#anchor`` must name a heading
of the target page (GitHub's anchors). Inline code that names a repository file
(``benchmarks/results/x.json``) must exist too, placeholders (``DATE``, ``NAME``, ``<label>``)
excepted, and the changelog's history of removed files. Web links are not fetched.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMAND_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK_PAGES = [*COMMAND_PAGES, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "agents" / "README.md"]
HYDRA_APPS = {"train.py": "config", "evaluate.py": "evaluate"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
BUILTINS = {".", "source", "export", "cd", "set", "unset", "echo", "wait"}
CLUSTER_ONLY = {"srun", "sbatch", "salloc"}  # need a cluster; their Hydra part is still checked
SUBCOMMANDS = {"pip", "wandb", "ray", "git", "battle-rl"}  # `pip install --help`, not `pip --help`


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- extracting commands ------------------------------------------------------------------

def code_blocks(text: str):
    """(language, body) of every fenced code block."""
    for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```", text, re.S | re.M):
        yield m.group(1).strip().lower(), m.group(2)


def shell_commands(path: Path) -> list[list[str]]:
    """The simple commands of a page's shell blocks, as argument lists."""
    commands = []
    for lang, body in code_blocks(path.read_text()):
        if lang not in SHELL_LANGS:
            continue
        body = re.sub(r"\\\n", " ", body)
        for line in body.splitlines():
            line = re.sub(r"^\s*\$ ", "", line)
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            command: list[str] = []
            for token in lexer:
                if token in (";", "&&", "||", "|", "&"):
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(token)
            if command:
                commands.append(command)
    return commands


def all_commands() -> list[tuple[str, list[str]]]:
    return [(rel(p), c) for p in COMMAND_PAGES for c in shell_commands(p)]


def strip_env(command: list[str]) -> list[str]:
    """Drop leading ``VAR=value`` assignments and ``nice``-like wrappers."""
    i = 0
    while i < len(command) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", command[i]):
        i += 1
    command = command[i:]
    if command[:1] == ["nice"]:
        command = command[1:]
        if command[:1] == ["-n"]:
            command = command[2:]
    return command


def hydra_part(command: list[str]) -> tuple[str, list[str]] | None:
    """(application, its arguments) where the command runs train.py or evaluate.py."""
    for i, arg in enumerate(command):
        if Path(arg).name in HYDRA_APPS and Path(arg).suffix == ".py":
            prefix = [Path(a).name for a in command[:i]]
            if not prefix or prefix[-1].startswith("python") or prefix[0] in (
                    "torchrun", *CLUSTER_ONLY):
                return Path(arg).name, command[i + 1:]
    return None


def program_of(command: list[str]) -> tuple[str, ...] | None:
    """What to ask for ``--help``: a script, a module, or a program (with its subcommand)."""
    command = strip_env(command)
    if not command or command[0] in BUILTINS or command[0] in CLUSTER_ONLY:
        return None
    head = Path(command[0]).name
    if head.startswith("python"):
        if command[1:2] == ["-m"]:
            return ("python", "-m", command[2])
        return ("python", command[1])
    if head == "bash":
        return ("bash", command[1])
    if head in SUBCOMMANDS and len(command) > 1 and not command[1].startswith("-"):
        return (head, command[1])
    return (head,)


# -- checking Hydra commands --------------------------------------------------------------

SHELL_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def compose_command(app: str, args: list[str]) -> None:
    """Compose an application's command line as Hydra would, raising on any error."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from battle_rl.config import check_group_choices, config_dirs, search_path

    parsed = get_args_parser().parse_args([SHELL_VAR.sub(r"\1", a) for a in args])
    if parsed.experimental_rerun:
        raise AssertionError("--experimental-rerun needs a file: show it in prose, not a command")
    path = search_path(str(ROOT / app), parsed.config_path or "conf", parsed.config_dir)
    overrides = list(parsed.overrides)
    check_group_choices(overrides, config_dirs(path))
    name = parsed.config_name or HYDRA_APPS[app]

    def compose(overrides, mode):
        hydra = Hydra.create_main_hydra2(task_name="battle_rl", config_search_path=path)
        try:
            return hydra.compose_config(name, overrides, run_mode=mode,
                                        with_log_configuration=False)
        finally:
            GlobalHydra.instance().clear()

    if not parsed.multirun:
        compose(overrides, RunMode.RUN)
        return
    # a multirun: its sweep configuration, then its first job (the first value of every sweep,
    # the command line's and the sweep config's own hydra.sweeper.params)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweep_cfg = compose(overrides, RunMode.MULTIRUN)
    parser = OverridesParser.create()
    params = sweep_cfg.hydra.sweeper.get("params") or {}
    job = [f"{k}={v}" for k, v in params.items()] + overrides
    first = {}
    for o in parser.parse_overrides(job):
        key = o.get_key_element()
        if o.is_sweep_override():
            try:
                value = next(iter(o.sweep_string_iterator()), None)
            except Exception:  # an interval or a tagged choice: Optuna's sweeper reads those
                value = None
            if value is None:  # a range or an interval (Optuna): the sweeper picks
                continue
            first[key.lstrip("+~")] = f"{key}={value}"
        else:
            first[key.lstrip("+~")] = o.input_line
    compose(list(first.values()), RunMode.RUN)


def hydra_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for page, command in all_commands():
        part = hydra_part(strip_env(command))
        if part is not None:
            found.append((page, *part))
    return found


def test_the_pages_show_commands():
    """The extraction works: the README's set-up and tour are found, Hydra and not."""
    commands = all_commands()
    assert len(commands) > 40
    assert any(c[:2] == ["python", "train.py"] for _, c in commands)
    assert any(hydra_part(c) and hydra_part(c)[0] == "evaluate.py" for _, c in commands)
    assert any(c[:1] == ["pytest"] for _, c in commands)


def test_hydra_commands_compose(monkeypatch):
    """Every ``python train.py ...`` and ``python evaluate.py ...`` of the docs composes
    (``--cfg job``), in one process: one compose per command, no subprocess."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))  # pkg://multirun_sweeps, as from the repository root
    failures = []
    commands = hydra_commands()
    assert len(commands) > 20
    for page, app, args in commands:
        try:
            compose_command(app, args)
        except BaseException as e:  # noqa: BLE001  (argparse exits with SystemExit)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            failures.append(f"{page}: {app} {' '.join(args)}\n    {first}")
    assert not failures, "commands that do not compose:\n" + "\n".join(failures)


def test_a_bad_override_fails_the_check():
    """The check can fail: an unknown key, an unknown group option."""
    with pytest.raises(Exception):
        compose_command("train.py", ["no_such_key=1"])
    with pytest.raises(Exception):
        compose_command("train.py", ["algo=nope"])
    with pytest.raises(Exception):
        compose_command("evaluate.py", ["-m", "nope=1,2"])


# -- checking other commands --------------------------------------------------------------

def help_command(program: tuple[str, ...]) -> list[str] | None:
    """The ``--help`` (or parse-only) command for a program; None: nothing to run."""
    if program[0] == "python":
        if program[1] == "-m":
            return [sys.executable, "-m", program[2], "--help"]
        return [sys.executable, program[1], "--help"]
    if program[0] == "bash":
        return ["bash", "-n", program[1]]
    exe = program[0]
    if exe == "python3":
        exe = sys.executable
    return [exe, *program[1:], "--help"]


def other_programs() -> dict[tuple[str, ...], list[str]]:
    programs: dict[tuple[str, ...], list[str]] = {}
    for page, command in all_commands():
        bare = strip_env(command)
        part = hydra_part(bare)
        if part is not None and not bare[0].startswith("torchrun"):
            continue  # composed above (torchrun itself still answers --help)
        program = program_of(command)
        if program is None:
            continue
        if part is not None:
            program = (Path(bare[0]).name,)
        programs.setdefault(program, []).append(page)
    return programs


@lru_cache(maxsize=None)
def _venv_bin() -> Path:
    return Path(sys.executable).parent


def help_in_process(program: tuple[str, ...]) -> tuple[tuple[str, ...], int, str]:
    """``python SCRIPT --help`` / ``python -m MODULE --help`` in this process (its imports are
    already loaded: a tenth of a second instead of seconds per program)."""
    import contextlib
    import io
    import runpy

    out = io.StringIO()
    argv, path = sys.argv, list(sys.path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if program[0] == "battle-rl":  # the console script: battle_rl.console.main
                from battle_rl.console import main

                sys.exit(main([*program[1:], "--help"]))
            if program[1] == "-m":
                sys.argv = [program[2], "--help"]
                runpy.run_module(program[2], run_name="__main__", alter_sys=True)
            else:
                script = ROOT / program[1]
                sys.argv = [str(script), "--help"]
                sys.path.insert(0, str(script.parent))  # as `python SCRIPT` puts it first
                runpy.run_path(str(script), run_name="__main__")
        return program, 1, "ran without answering --help: " + out.getvalue()[-300:]
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        text = out.getvalue()
        if code == 0 and "usage" not in text.lower():
            return program, 1, "no usage text: " + text[-300:]
        return program, code, text[-300:]
    except BaseException as e:  # noqa: BLE001
        return program, 1, f"{type(e).__name__}: {e}"
    finally:
        sys.argv, sys.path[:] = argv, path


def run_help(program: tuple[str, ...]) -> tuple[tuple[str, ...], int, str]:
    cmd = help_command(program)
    if program[0] not in ("python", "bash"):
        exe = shutil.which(cmd[0], path=f"{_venv_bin()}:{shutil.os.environ.get('PATH', '')}")
        if exe is None:
            return program, 127, f"{cmd[0]}: not installed"
        cmd[0] = exe
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return program, proc.returncode, (proc.stderr or proc.stdout).strip()[-300:]


def test_other_commands_answer_help(monkeypatch):
    """Scripts, modules and tools named in the docs run and answer ``--help`` (``bash`` scripts:
    they exist and parse). One run per distinct program, two at a time."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    programs = other_programs()
    assert ("battle-rl", "tournament") in programs and ("python", "benchmarks/strength.py") in programs
    for program in programs:
        if program[0] in ("python", "bash") and program[-1] not in ("-m",) and "/" in program[-1]:
            assert (ROOT / program[-1]).is_file(), f"{program[-1]} is named in " \
                f"{', '.join(sorted(set(programs[program])))} but does not exist"
    in_process = [p for p in programs
                  if (p[0] == "python" and p[1:] != ("-m", "venv")) or p[0] == "battle-rl"]
    outside = [p for p in programs if p not in in_process]
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.map(run_help, outside)
        results = [help_in_process(p) for p in in_process] + list(running)
    failures = [f"{' '.join(p)} (in {', '.join(sorted(set(programs[p])))}): exit {rc}: {out}"
                for p, rc, out in results if rc != 0]
    assert not failures, "commands that do not answer --help:\n" + "\n".join(failures)


# -- links ----------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"`|\*\*|\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    found, seen = set(), {}
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        base = github_anchor(m.group(1))
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_links_resolve():
    failures = []
    for page in LINK_PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto: not fetched
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                failures.append(f"{rel(page)}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                failures.append(f"{rel(page)}: {target}: no heading #{anchor} in {rel(dest)}")
    assert not failures, "links that do not resolve:\n" + "\n".join(failures)


TOP_LEVEL = ("conf/", "battle_rl/", "benchmarks/", "scripts/", "docs/", "tests/",
             "multirun_sweeps/")
PLACEHOLDER = re.compile(r"[A-Z]{3,}|<|\*|\.\.\.|\{|\$")


def test_named_files_exist():
    """Inline code that names a file of the repository names one that exists."""
    failures = []
    for page in [p for p in LINK_PAGES if p.name != "CHANGELOG.md"]:  # history names the gone
        for code in re.findall(r"`([^`\n]+)`", prose(page)):
            for word in code.split():
                word = word.strip(",;:()")
                if not word.startswith(TOP_LEVEL) or PLACEHOLDER.search(word):
                    continue
                if not (ROOT / word).exists():
                    failures.append(f"{rel(page)}: {word}")
    assert not failures, "files named in the docs that do not exist:\n" + "\n".join(failures)


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert not re.search(r"\bissue \d+|\bmorning\b|\bevening\b|\bafternoon\b|\bsession", text,
                         re.I)
