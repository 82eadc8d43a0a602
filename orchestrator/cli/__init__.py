"""The `consistency` command: one module per command group, each parsing its
options and printing what the modules of orchestrator return
(orchestrator.output prints)."""

from __future__ import annotations

import sys

import click
import psycopg

from orchestrator import db, output
from orchestrator.cli import (
    alerts,
    bench,
    circuit,
    config,
    demo,
    migrate,
    monitor,
    relay,
    review,
    serve,
)
from orchestrator.cli import validate as validate_cli
from orchestrator.cli.common import CONTEXT_SETTINGS, DSN_HELP, example
from orchestrator.errors import GuardError
from orchestrator.profile import ProfileError


@example("consistency --dsn postgresql://owner@db/app check --window 1h")
@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="consistency-guard")
@click.option("--dsn", metavar="DSN", default=None, help=DSN_HELP + " Every command takes it "
              "here too.")
def cli(dsn: str | None) -> None:
    """consistency-guard: PostgreSQL keeps calls and appointments consistent."""


for _module in (migrate, config, validate_cli, review, circuit, relay, monitor, alerts, bench,
                serve, demo):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
for _alias, _command in relay.ALIASES.items():
    cli.add_command(_command, _alias)


def main(argv: list[str] | None = None) -> None:
    """Console script: user mistakes and unreachable databases become one line
    on stderr and exit code 2, never a traceback; a group called without a
    command prints its help."""
    try:
        code = cli.main(args=argv, prog_name="consistency", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())
        sys.exit(0)
    except ProfileError as exc:
        for line in exc.lines:
            output.error(line)
        for note in exc.notes:
            output.err.print(f"note: {output.clean(note)}", markup=False)
        sys.exit(exc.exit_code)
    except GuardError as exc:
        output.error(exc)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "consistency"
        output.error(f"{exc.format_message()} (see {where} --help)")
        sys.exit(2)
    except click.ClickException as exc:
        output.error(exc.format_message())
        sys.exit(2)
    except click.exceptions.Abort:
        output.say("aborted", to_stderr=True)
        sys.exit(130)
    except psycopg.OperationalError as exc:
        output.error(f"database unavailable: {db.describe_error(exc)}")
        sys.exit(2)
    except psycopg.Error as exc:
        output.error(f"database: {db.describe_error(exc)}")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["cli", "main"]
