"""The documentation: the site builds in strict mode (a broken link, a missing page or anchor, an
API page that fails to render all fail it), and every `ltc` command shown in README.md and in
docs/ parses with the command's own parser (in process, nothing run)."""
from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`(ltc [^`]+)`")
MAKE_RUN = re.compile(r"make run ARGS=\"([^\"]*)\"")
DEFAULT_RUN = ["imp", "--config", "configs/mnist1d_imp.yaml", "--run_dir", "runs/mnist1d_imp"]


def _without_substitutions(line: str) -> str:
    """`$(...)` (balanced, possibly quoted inside) replaced by a placeholder word, so that shlex
    splits the rest as a shell would."""
    out, i = [], 0
    while i < len(line):
        if line.startswith("$(", i):
            depth, i = 1, i + 2
            while i < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[i], 0)
                i += 1
            out.append("SUBSTITUTED")
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def _argv(line: str) -> list[str] | None:
    """The `ltc` argv of a shell line (`ltc ...`, `... -m experiments.cli ...`), None for others."""
    if not (line.lstrip().startswith("ltc ") or "-m experiments.cli " in line):
        return None
    words = shlex.split(_without_substitutions(line), comments=True)
    if words[:1] == ["ltc"]:
        return words[1:]
    for i in range(len(words) - 1):
        if words[i:i + 2] == ["-m", "experiments.cli"]:
            return words[i + 2:]
    return None


def shown_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `ltc` command in a code block or an inline code span, and of every
    `make run ARGS="..."` (the default run with those flags)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        where = str(page.relative_to(ROOT))
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip() and (argv := _argv(line)) is not None:
                    found.append((where, argv))
        prose = FENCE.sub("", text)
        found += [(where, _argv(span)) for span in INLINE.findall(prose) if "<" not in span]
        found += [(where, DEFAULT_RUN + shlex.split(args)) for args in MAKE_RUN.findall(text)]
    return found


COMMANDS_SHOWN = shown_commands()


def test_the_pages_show_commands_of_every_kind():
    names = {argv[0] for _, argv in COMMANDS_SHOWN if argv}
    assert names == set(COMMANDS), set(COMMANDS) ^ names
    assert sum(len(argv) > 1 for _, argv in COMMANDS_SHOWN) >= 20


@pytest.mark.parametrize("where, argv", COMMANDS_SHOWN, ids=[" ".join(a)[:60] for _, a in COMMANDS_SHOWN])
def test_every_ltc_command_shown_parses(where, argv, monkeypatch):
    """Parsed by the command's parser as `ltc` would (config files relative to the repository);
    a bare `ltc <name>` in prose needs only to name a command."""
    assert argv and argv[0] in COMMANDS, f"{where}: `ltc {' '.join(argv)}` names no command"
    if len(argv) == 1:
        return
    monkeypatch.chdir(ROOT)
    parser = importlib.import_module(COMMANDS[argv[0]][0]).build_parser()
    try:
        parser.parse_args(argv[1:])
    except SystemExit as exc:  # --help, --print_config: printed, then exit 0
        assert exc.code in (0, None), f"{where}: `ltc {shlex.join(argv)}` exits {exc.code}"
    except (argparse.ArgumentError, ValueError, TypeError) as exc:  # an unknown flag, a bad value
        pytest.fail(f"{where}: `ltc {shlex.join(argv)}` does not parse: {' '.join(str(exc).split())[:300]}")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def test_site_builds_in_strict_mode(tmp_path):
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert 'id="channels.results.open_runs"' in api  # the API reference rendered from docstrings
    assert (tmp_path / "site" / "verdict" / "index.html").is_file()


def test_strict_build_fails_on_a_broken_link(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    for package in ("channels", "lth"):  # what the API page documents
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    page = copy / "docs" / "concepts.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    done = _build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "no-such-page.md" in done.stderr, done.stderr[-2000:]
