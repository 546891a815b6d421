"""Every command that README.md and docs/*.md show runs as written (issue 21), and the README's
two set-up commands work with a PEP 668 ("externally managed") Python.

How the command blocks are run
- A command block is a fenced ```bash, ```sh or ```console block (a console line's `$ ` prompt
  is dropped, the lines without one are output). A line ending in `\\` goes on on the next one.
- Each command runs as written, in a fresh `bash -c`, with the clone's `.venv` (the two set-up
  commands' environment) and no activated environment on PATH. Its working folder is a
  temporary one per page, holding links to the clone's top-level entries, so `examples/...`
  and `.venv/bin/...` resolve and what the commands write (`runs/`, `demo_out/`, ...) lands
  there. A page's commands run in their order in that folder: a later one finds what an earlier
  one wrote, as for a reader who types them one after another (shell variables do not carry).
  PYTHONPATH names the checkout: what its editable install gives, also in a git worktree.
- Size: a trailing comment `quick: FLAGS` appends FLAGS to the command. argparse keeps a flag's
  last value, so `--steps 6000 ...  # quick: --steps 40` trains 40 steps. The flags stand in
  the block itself, where the reader sees them; nothing else is changed or added.
- Skips: `needs: WHAT` in a trailing comment skips that command with the reason WHAT; alone on a
  comment line, it skips every command after it in the block. It marks what the two set-up
  commands do not give: network, a GPU, several MPI ranks, torch, hours, the whole suite.
- The README's two set-up commands: the part before the last `&&` (make `.venv` and install)
  runs in `test_readme_set_up_works_on_an_externally_managed_python`, into a throwaway virtual
  environment; the part after it runs here like any other command.

The PEP 668 check makes such an interpreter out of the one running it: a fresh prefix holding a
copy of the Python binary and a stdlib folder whose entries link to the real ones, plus PEP 668's
EXTERNALLY-MANAGED marker. It checks that the marker bites (a bare pip install is refused), then
runs each README command's set-up part with that interpreter first on PATH as `python3`. pip
installs minidiff alone (PIP_NO_DEPS), so it fetches no more than the build back-end.
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
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
REFUSAL = "externally-managed-environment"          # pip's error code for PEP 668
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHELL = ("bash", "sh", "console")
SETUP = "## Two commands"
TIMEOUT = 300                                        # seconds a command may take at its quick size


def split_comment(line):
    """(command, comment) of one shell line: the comment starts at an unquoted ` #`."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def marker(comment, name):
    """The text after `name:` in a comment (up to a `;` or the end), or None."""
    found = re.search(rf"\b{name}:\s*([^;]*)", comment)
    return found.group(1).strip() if found else None


def blocks(page):
    """[(line number, language, text)] of every fenced block of a page."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1), m.group(2))
            for m in FENCE.finditer(text)]


def name(page):
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def block_commands(page, first, language, text):
    """[(where, command with its quick flags, reason to skip or None)] of one block."""
    found, block_needs, pending, start = [], None, "", None
    for n, raw in enumerate(text.splitlines(), first):
        if language == "console":
            if not raw.startswith("$ ") and not pending:
                continue                                         # output, not a command
            raw = raw[2:] if raw.startswith("$ ") else raw
        line, comment = split_comment(raw)
        if not line and not pending:                             # a comment line, or blank
            block_needs = marker(comment, "needs") or block_needs
            continue
        start = start or n
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        command, pending = pending + line.strip(), ""
        quick = marker(comment, "quick")
        found.append((f"{name(page)}:{start}",
                      f"{command} {quick}" if quick else command,
                      marker(comment, "needs") or block_needs))
        start = None
    return found


def commands(page):
    """Every command of a page's shell blocks, in order."""
    return [c for first, language, text in blocks(page) if language in SHELL
            for c in block_commands(page, first, language, text)]


def readme_commands():
    """{'demo': command, 'test': command}: the two commands of the README's "Two commands"."""
    page = ROOT / "README.md"
    heading = page.read_text(encoding="utf-8").split(SETUP, 1)[0].count("\n") + 1
    first, language, text = next(b for b in blocks(page) if b[0] > heading and b[1] in SHELL)
    found = [command for _, command, _ in block_commands(page, first, language, text)]
    demo = [c for c in found if " -m minidiff demo" in c]
    test = [c for c in found if c.endswith(" -m pytest tests")]
    assert len(found) == 2 and len(demo) == 1 and len(test) == 1, found
    return {"demo": demo[0], "test": test[0]}


def set_up_part(command):
    """Everything before the command's last `&&`: what prepares the run, not the run."""
    return command.rsplit(" && ", 1)[0]


def run_part(command):
    """A README set-up command's run (after its last `&&`); any other command whole."""
    setup = command in readme_commands().values()
    return command.rsplit(" && ", 1)[1] if setup else command


# ---------------------------------------------------------------- every command, as written

def fresh_shell_env():
    """The environment of a fresh shell: no virtual environment active, none on PATH."""
    venv_bins = {str(Path(sys.prefix) / "bin"), str(ROOT / ".venv" / "bin")}
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONHOME", "MINIDIFF_DEVICE")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p not in venv_bins)
    # this checkout's code, also in a git worktree whose .venv was installed from another one
    env["PYTHONPATH"] = str(ROOT)
    return env


CLONE = ("minidiff", "kernels", "examples", "benchmarks", "tests", "docs", "setup.py",
         "README.md", ".ci", ".git", ".gitignore", ".bench")


def workdir(base):
    """A folder that looks like the clone (links to its files) but keeps what is written."""
    base.mkdir()
    for name in CLONE:
        if (ROOT / name).exists():
            (base / name).symlink_to(ROOT / name)
    (base / ".venv").symlink_to(Path(sys.prefix))        # the venv running this test
    return base


@pytest.fixture(scope="session")
def page_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    return {page: workdir(root / page.stem) for page in PAGES}


def run_command(command, cwd):
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=fresh_shell_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT)


def check_command(command, cwd):
    done = run_command(command, cwd)
    out = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{out}"


ALL = [(page, where, command, needs) for page in PAGES for where, command, needs in commands(page)]


@pytest.mark.parametrize("page, where, command, needs", ALL, ids=[a[1] for a in ALL])
def test_command_runs_as_written(page, where, command, needs, page_dirs):
    if needs:
        pytest.skip(f"needs {needs}")
    check_command(run_part(command), page_dirs[page])


def test_a_broken_command_fails(tmp_path):
    """The check above can fail: a flag minidiff does not have, a script that is not there."""
    cwd = workdir(tmp_path / "clone")
    for broken in (".venv/bin/minidiff train --no-such-flag 1",
                   "minidiff --help",                           # not on PATH: nothing activated
                   ".venv/bin/python examples/no_such_script.py"):
        with pytest.raises(AssertionError, match="exited"):
            check_command(broken, cwd)


def test_the_parser_reads_continuations_markers_and_prompts(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("x\n```bash\n# needs: a cluster\nsrun a \\\n    b  # why\n```\n"
                    "```bash\n.venv/bin/minidiff train --steps 9 \\\n  --out-dir r  "
                    "# note; quick: --steps 2\necho '# not a comment'  # needs: gpu\n```\n"
                    "```console\n$ ls  # quick: -a\nREADME.md\n```\n```python\nimport os\n```\n")
    cmds = [(where.split(":")[1], c, needs) for where, c, needs in commands(page)]
    assert cmds == [("4", "srun a b", "a cluster"),
                    ("8", ".venv/bin/minidiff train --steps 9 --out-dir r --steps 2", None),
                    ("10", "echo '# not a comment'", "gpu"),
                    ("13", "ls -a", None)]


def test_every_page_has_commands_and_each_docs_page_opens_with_its_command():
    for page in PAGES:
        assert commands(page), f"{page.name}: no command block"
    for page in PAGES[1:]:
        text = page.read_text(encoding="utf-8")
        first_block = text.index("\n```")
        assert "\n## " not in text[:first_block], f"{page.name}: the command comes after a section"


COMMANDLIKE = re.compile(r"^(\.venv/|\.bench/|python\S* |pip |minidiff |mpiexec |git |mkdir |env "
                         r"|curl )")


def test_no_command_hides_in_an_unlabelled_block():
    for page in PAGES:
        for n, language, text in blocks(page):
            first = text.strip().splitlines()[0] if text.strip() else ""
            assert language in SHELL or not COMMANDLIKE.match(first), \
                f"{page.name}:{n}: a command in a ```{language} block: label it ```bash"


# ---------------------------------------------------------------- the README is a front page

TOP = sorted(p.name for p in ROOT.iterdir() if not p.name.startswith(".")) + [".ci"]
# A path out of the clone: ../ to anything but the repository's own top level (docs/ link
# ../examples/...), a design document or notes that only the project's makers have.
ELSEWHERE = re.compile(r"ARCHITECTURE\.md|\.\./(?!(?:" + "|".join(map(re.escape, TOP))
                       + r")\b)|\bthe notes?\b", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+)")
PATH = re.compile(r"`((?:" + "|".join(map(re.escape, TOP)) + r")/[\w./-]*)`")


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_file_named_is_in_the_repository(page):
    text = page.read_text(encoding="utf-8")
    assert not ELSEWHERE.search(text), ELSEWHERE.search(text).group(0)
    for target in LINK.findall(text):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: link {target}"
    for named in PATH.findall(text):
        assert "<" in named or (ROOT / named).exists(), f"{page.name}: {named} is not here"


# ---------------------------------------------------------------- the two set-up commands

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
    commands_ = readme_commands()
    for name, command in commands_.items():
        assert " && " in command, f"the {name} command has no set-up part"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == commands_["test"]


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
