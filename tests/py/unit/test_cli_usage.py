"""What every command of `consistency` shares, tried without a database: a
bare group prints its help, every command shows an example, --version comes
from the installed package, and no DSN with no server names --dsn and
DATABASE_URL."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import click
import pytest

from orchestrator.cli import cli


def commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += commands(command, (*path, name))
    return found


EVERY_COMMAND = commands(cli)
GROUPS = [path for path in EVERY_COMMAND
          if isinstance(cli.get_command(click.Context(cli), path[0]), click.Group)
          and len(path) == 1]


def test_the_tree_holds_every_command_group() -> None:
    assert {path[0] for path in EVERY_COMMAND} >= {
        "migrate", "config", "validate", "review", "circuit", "relay", "check", "report",
        "retention", "schedule", "alerts", "bench", "serve", "up", "demo", "uninstall"}


@pytest.mark.parametrize("path", [(), *EVERY_COMMAND], ids=lambda p: " ".join(p) or "consistency")
def test_every_command_shows_an_example(path, run_cli) -> None:
    result = run_cli(*path, "--help")
    assert result.code == 0 and result.err == ""
    lines = result.out.splitlines()
    example = lines[lines.index("  Example:") + 1]
    assert f" consistency {' '.join(path)}".rstrip() in example, "the example runs this command"


# `bench`, `migrate` and `relay` are groups that do their job when called bare
# (every benchmark, the migration, the relay); the others print their help.
@pytest.mark.parametrize("group", [(), ("config",), ("circuit",), ("review",), ("retention",),
                                   ("schedule",), ("alerts",)],
                         ids=lambda p: " ".join(p) or "consistency")
def test_a_bare_group_prints_its_help_to_stdout(group, run_cli) -> None:
    result = run_cli(*group)
    assert result.code == 0, result
    assert result.err == ""
    assert result.out.startswith(f"Usage: consistency {' '.join(group)}".rstrip())
    assert "Commands:" in result.out


def test_version_comes_from_the_installed_package(run_cli) -> None:
    result = run_cli("--version")
    assert result.code == 0
    assert result.out.strip().endswith(importlib.metadata.version("consistency-guard"))


def test_no_dsn_and_no_server_names_where_a_database_is_given(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k != "DATABASE_URL"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "config", "show"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: cannot connect to PostgreSQL")
    assert "--dsn" in proc.stderr and "DATABASE_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", [(), *EVERY_COMMAND], ids=lambda p: " ".join(p) or "consistency")
def test_every_description_is_wrapped_as_one_text(path, run_cli) -> None:
    """Each paragraph of a command's description starts at the usual indent
    and is rewrapped without the docstring's own indentation left in it."""
    result = run_cli(*path, "--help")
    lines = result.out.splitlines()
    description = lines[1:lines.index("  Example:")]
    for line in filter(None, description):
        assert line.startswith("  ") and not line.startswith("   "), line
        assert "   " not in line.strip(), line
