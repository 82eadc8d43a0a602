"""`consistency config show|set|sync`."""

from __future__ import annotations

import json

import click

from orchestrator import config
from orchestrator.cli.common import connect, dsn_option, example, json_option
from orchestrator.output import print_json, say, table

ACTOR_HELP = "Recorded in the audit log (default cli:$USER)."


@example("consistency config show | grep cooldown")
@click.group("config")
def config_group() -> None:
    """Show and change settings (consistency.settings)."""


@example("consistency config show --json")
@config_group.command("show")
@dsn_option
@json_option
def config_show(dsn: str | None, as_json: bool) -> None:
    """Print every setting with its value, bounds, env variable and meaning."""
    with connect(dsn) as conn:
        settings = config.list_settings(conn)
    if as_json:
        print_json({s.key: s.value for s in settings})
        return
    table(("key", "value", "min", "max", "env", "description"),
          [(s.key, json.dumps(s.value), s.min_value, s.max_value, s.env_var, s.description)
           for s in settings])


@example("consistency config set circuit_breaker.cooldown_seconds 60 --actor ops:ann")
@config_group.command("set", context_settings={"ignore_unknown_options": True})
@dsn_option
@click.argument("key")
@click.argument("value")
@click.option("--actor", default=None, help=ACTOR_HELP)
@json_option
def config_set(dsn: str | None, key: str, value: str, actor: str | None, as_json: bool) -> None:
    """Set KEY to VALUE (validated, audited)."""
    parsed = config.parse_value(value)
    with connect(dsn) as conn:
        changed = config.set_setting(conn, key, parsed, actor or config.default_actor())
    if as_json:
        print_json({"key": key, "value": parsed, "changed": changed})
    else:
        say(f"{key} = {value}" if changed else f"{key} already {value}: unchanged")


@example("CIRCUIT_BREAKER_COOLDOWN=60 consistency config sync")
@config_group.command("sync")
@dsn_option
@json_option
@click.option("--actor", default=None, help=ACTOR_HELP)
def config_sync(dsn: str | None, as_json: bool, actor: str | None) -> None:
    """Apply the settings whose environment variables are set (all or nothing)."""
    with connect(dsn) as conn:
        changed = config.sync_from_env(conn, actor or config.default_actor())
    if as_json:
        print_json({"changed": changed})
    else:
        say("changed: " + ", ".join(changed) if changed else "nothing to change")


COMMANDS = [config_group]
