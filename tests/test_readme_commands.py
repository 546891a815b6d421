"""The README's two commands must work with a PEP 668 ("externally managed") Python, such as the
system python3 of Debian 12 or Ubuntu 23.04 and later, which refuses a bare `pip install`.

The test makes such an interpreter out of the one running it: a fresh prefix holding a copy of
the Python binary and a stdlib folder whose entries link to the real ones, plus PEP 668's
EXTERNALLY-MANAGED marker. It checks that the marker bites (a bare pip install is refused), then
runs each README command's set-up part (everything before its last `&&`) with that interpreter
first on PATH as `python3`. pip installs minidiff alone (PIP_NO_DEPS), into the throwaway
virtual environment that command makes, so it fetches no more than the build back-end.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFUSAL = "externally-managed-environment"          # pip's error code for PEP 668


def readme_commands():
    """{'demo': command, 'test': command}: the two lines of the README's "Two commands" block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    demo = [line for line in lines if line.endswith("-m minidiff demo")]
    test = [line for line in lines if line.endswith("-m pytest tests")]
    assert len(lines) == 2 and len(demo) == 1 and len(test) == 1, lines
    return {"demo": demo[0], "test": test[0]}


def set_up_part(command):
    """Everything before the command's last `&&`: what prepares the run, not the run."""
    return command.rsplit(" && ", 1)[0]


def externally_managed_python(where):
    """A copy of this test's base interpreter whose stdlib carries PEP 668's marker."""
    base = Path(sys.base_prefix)
    stdlib = Path(sysconfig.get_path("stdlib"))              # the base's, also inside a venv
    fake = where / "system-python"
    (fake / "bin").mkdir(parents=True)
    # a copy, not a link: Python finds its prefix by walking up from the binary's real path
    shutil.copy2(os.path.realpath(sys._base_executable), fake / "bin" / "python3")
    for entry in (base / "lib").iterdir():                   # e.g. Debian's lib/python3/
        if entry != stdlib:
            (fake / "lib").mkdir(exist_ok=True)
            (fake / "lib" / entry.name).symlink_to(entry)
    fake_stdlib = fake / stdlib.relative_to(base)
    fake_stdlib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "EXTERNALLY-MANAGED":
            (fake_stdlib / entry.name).symlink_to(entry)
    (fake_stdlib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=a stand-in for a Debian or Ubuntu system Python\n")
    return fake / "bin"


def clean_env(path_first):
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH") and not k.startswith("PIP_")}
    env.update(PATH=f"{path_first}{os.pathsep}{env.get('PATH', '')}",
               PIP_NO_DEPS="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")
    return env


def test_readme_commands_parse_and_ci_runs_the_test_command_verbatim():
    commands = readme_commands()
    for name, command in commands.items():
        assert " && " in command, f"the {name} command has no set-up part"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == commands["test"]


@pytest.mark.skipif(not hasattr(sys, "_base_executable"), reason="needs sys._base_executable")
def test_readme_set_up_works_on_an_externally_managed_python(tmp_path):
    system_bin = externally_managed_python(tmp_path)
    clone = tmp_path / "clone"                      # what `pip install -e .` needs of a clone
    clone.mkdir()
    shutil.copy2(ROOT / "setup.py", clone / "setup.py")
    for folder in ("minidiff", "kernels"):
        shutil.copytree(ROOT / folder, clone / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = clean_env(system_bin)

    # The stand-in really is externally managed: a bare pip install is refused.
    bare = subprocess.run([str(system_bin / "python3"), "-m", "pip", "install", "-e", "."],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0 and REFUSAL in bare.stdout + bare.stderr, bare.stderr[-2000:]

    # Each README command's set-up, as a newcomer would type it, is not.
    for name, command in readme_commands().items():
        run = subprocess.run(["bash", "-c", set_up_part(command)], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=300)
        out = run.stdout + run.stderr
        assert REFUSAL not in out, f"{name}: {out[-2000:]}"
        assert run.returncode == 0, f"{name}: {out[-2000:]}"
        assert "Successfully installed minidiff" in run.stdout, f"{name}: {out[-2000:]}"
