"""`consistency review list|claim|resolve`."""

from __future__ import annotations

import json
from typing import Any

import click

from orchestrator import review
from orchestrator.cli.common import BigInt, connect, dsn_option, example, json_option
from orchestrator.output import print_json, say, table, timestamp


@example("consistency review claim --reviewer ann")
@click.group("review")
def review_group() -> None:
    """Work the manual review queue (consistency.manual_review_queue)."""


def _item_row(item: review.ReviewItem) -> list[Any]:
    return [item.id, item.call_id, item.reason, item.priority, item.status, item.assigned_to,
            timestamp(item.created_at), item.resolution_notes]


@example("consistency review list --status pending --limit 20")
@review_group.command("list")
@dsn_option
@json_option
@click.option("--status", type=click.Choice(review.STATUSES), default=None,
              help="Only items in this state (default: all, open ones first).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def review_list(dsn: str | None, as_json: bool, status: str | None, limit: int) -> None:
    """List review items: open ones in claim order, then closed ones."""
    with connect(dsn, autocommit=True) as conn:
        items = review.list_items(conn, status, limit)
    if as_json:
        print_json([item.as_dict() for item in items])
        return
    table(("id", "call", "reason", "prio", "status", "assigned", "created", "notes"),
          [_item_row(item) for item in items])


@example("consistency review claim --reviewer ann --json")
@review_group.command("claim")
@dsn_option
@json_option
@click.option("--reviewer", required=True,
              help="Who takes the item: your login, unless you connect as the guard's owner.")
def review_claim(dsn: str | None, as_json: bool, reviewer: str) -> None:
    """Take the most urgent pending item (highest priority, oldest)."""
    with connect(dsn, autocommit=True) as conn:
        item = review.claim(conn, reviewer)
    if as_json:
        print_json(item.as_dict() if item else None)
    elif item is None:
        say("nothing to review")
    else:
        say(f"claimed item {item.id}: call {item.call_id}, {item.reason} "
            f"(priority {item.priority}) context {json.dumps(item.context)}")


@example('consistency review resolve 42 --reviewer ann --status resolved --notes "rebooked"')
@review_group.command("resolve")
@dsn_option
@json_option
@click.argument("item_id", type=BigInt())
@click.option("--reviewer", required=True,
              help="Must be the assignee (or the item unassigned), and your login unless you "
                   "connect as the guard's owner.")
@click.option("--status", type=click.Choice(["resolved", "dismissed"]), required=True)
@click.option("--notes", required=True, help="What was done; kept with the item.")
def review_resolve(dsn: str | None, as_json: bool, item_id: int, reviewer: str, status: str,
                   notes: str) -> None:
    """Close ITEM_ID as resolved or dismissed."""
    with connect(dsn, autocommit=True) as conn:
        item = review.resolve(conn, item_id, reviewer, status, notes)
    if as_json:
        print_json(item.as_dict())
    else:
        say(f"item {item.id} {item.status} by {item.assigned_to}")


COMMANDS = [review_group]
