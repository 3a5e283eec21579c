"""One command line: every subcommand in one argparse tree, each option with its help, the
``atlaspipe-submit`` alias, and shell completion."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlaspipe.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("atlaspipe",)) -> Iterator[
        tuple[tuple[str, ...], argparse.Action]]:
    """Every action of ``parser`` and of its subcommands, with the command it belongs to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, action


def test_every_option_of_every_subcommand_has_help() -> None:
    tree = cli.build_parser()
    actions = list(walk(tree))
    commands = {path[1] for path, _ in actions if len(path) > 1}
    assert commands == set(cli.COMMANDS), "a subcommand was not configured"
    assert {"submit", "status", "list", "resume", "cancel", "clean"} <= commands
    silent = [f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}" for path, action in actions
              if not isinstance(action, argparse._HelpAction)
              and (not action.help or action.help == argparse.SUPPRESS or not action.help.strip())]
    assert not silent, "options without help text: " + ", ".join(silent)


def test_the_walk_finds_an_option_without_help() -> None:
    """The walk above reaches subcommands' options: one added without help is reported."""
    tree = cli.build_parser()
    sub = next(a for a in tree._actions if isinstance(a, argparse._SubParsersAction)).choices["status"]
    sub.add_argument("--undocumented")
    assert any(a.option_strings == ["--undocumented"] and not a.help for _, a in walk(tree))


def test_submit_has_its_former_options_and_the_alias_entry_point_stays() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"atlaspipe": "atlaspipe.cli.main:main", "atlaspipe-submit": "atlaspipe.cli.submit:main"}
    tree = cli.build_parser()
    parsed = tree.parse_args(["submit", "--release", "2025e", "--samples", "data", "--no-wait"])
    assert (parsed.command, parsed.release, parsed.samples, parsed.wait) == ("submit", "2025e", ["data"], False)
    assert tree.parse_args(["clean", "--older-than", "30"]).older_than == 30.0
    assert tree.parse_args(["resume", "r1", "--force"]).force


def test_fit_channels_reach_the_request_of_run_and_submit(tmp_path: Path) -> None:
    from atlaspipe.cli import run, submit

    tree = cli.build_parser()
    config = tmp_path / "analysis.toml"
    config.write_text('[analysis.fit]\nchannels = "simultaneous"\nstaterror = false\n')
    for build, command in ((run.build_request, "run"), (submit._request, "submit")):
        assert build(tree.parse_args([command])).config.fit.channels == "combined"
        chosen = build(tree.parse_args([command, "--fit-channels", "simultaneous"]))
        assert chosen.config.fit.channels == "simultaneous"
        # The flag wins over the config file, and keeps the file's other fit settings.
        flag = build(tree.parse_args([command, "--config", str(config), "--fit-channels", "combined"]))
        assert (flag.config.fit.channels, flag.config.fit.staterror) == ("combined", False)
        assert build(tree.parse_args([command, "--config", str(config)])).config.fit.channels == "simultaneous"
    with pytest.raises(SystemExit):
        tree.parse_args(["run", "--fit-channels", "per-lepton"])


def test_pdf_figures_reach_the_request_of_run_and_submit() -> None:
    from atlaspipe.cli import run, submit

    tree = cli.build_parser()
    for build, command in ((run.build_request, "run"), (submit._request, "submit")):
        assert not build(tree.parse_args([command])).pdf_figures
        assert build(tree.parse_args([command, "--pdf"])).pdf_figures


@pytest.mark.parametrize(("argv", "usage"), [
    (["--help"], "usage: atlaspipe submit"),
    (["status", "--help"], "usage: atlaspipe status"),
    (["list", "--help"], "usage: atlaspipe list"),
])
def test_atlaspipe_submit_is_an_alias(argv: list[str], usage: str) -> None:
    done = subprocess.run([sys.executable, "-m", "atlaspipe.cli.submit", *argv], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith(usage), done.stdout + done.stderr


def test_usage_errors_are_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "atlaspipe.cli.main", "stauts"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "invalid choice: 'stauts'" in done.stderr, done.stderr


def complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell is offered for the command line ``line`` (cursor at its end), asked as bash asks."""
    answer = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_IFS": "\013", "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    done = subprocess.run([sys.executable, "-m", "atlaspipe.cli.main"], capture_output=True, text=True, timeout=60,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr
    return answer.read_text().split("\013")


def test_completion_knows_the_subcommands_and_their_options(tmp_path: Path) -> None:
    assert set(complete("atlaspipe s", tmp_path)) == {"submit", "status", "serve"}
    assert complete("atlaspipe submit --rel", tmp_path) == ["--release "]
    assert set(complete("atlaspipe submit --release ", tmp_path)) == {"2020", "2025e"}


def test_completion_command_prints_the_shell_code() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_ARGCOMPLETE", "COMP_"))}
    done = subprocess.run([sys.executable, "-m", "atlaspipe.cli.main", "completion", "bash"], capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "complete " in done.stdout and "atlaspipe" in done.stdout and "_python_argcomplete" in done.stdout


def test_submitting_loads_no_array_library() -> None:
    """Building, sending and following a request is the start of every distributed run: it must not
    pay for awkward, numpy or uproot, which only the workers use."""
    code = ("import sys, atlaspipe.cli.submit, atlaspipe.results.summary\n"
            "from atlaspipe.api import make_request\n"
            "make_request()\n"
            "print(sorted(m for m in ('awkward', 'numpy', 'uproot', 'hist', 'matplotlib', 'pyhf') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
