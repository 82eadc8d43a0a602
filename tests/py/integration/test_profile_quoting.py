"""Every name and value of an adoption profile reaches the guard's SQL quoted,
whatever it holds (tests/py/unit/test_templates.py checks where the
templates place them; this installs and runs the guard with hostile but
printable ones)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

# Quotes of both kinds, comment openers, a statement end, a backslash, a
# multi-byte letter: what would break out of a context that quotes wrongly.
HOSTILE = "it's -- \"odd\" /* ; */ \\ ñ"
STATES = ("unlinked", "pending_creation", "linked", "cancelled", "creation_failed",
          "not_applicable")


def name(n: int) -> str:
    return f"{HOSTILE} {n}"


def value(what: str) -> str:
    return f"{what}'); DROP TABLE public.calls; -- {HOSTILE}"


def toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_a_hostile_profile_installs_and_the_guard_writes_its_values(empty_db: str, run_cli,
                                                                    tmp_path: Path) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(sql.SQL("""
            CREATE TABLE public.calls (
                id bigserial PRIMARY KEY, {call_id} text NOT NULL UNIQUE, {booking} text,
                {link} bigint, session_outcome text, appointment_link_status text,
                customer_link_status text, customer_link_method text, direction text,
                created_at timestamptz DEFAULT now());
            CREATE TABLE public.appointments (
                id bigserial PRIMARY KEY, call_id bigint REFERENCES public.calls (id),
                {abooking} text, status text NOT NULL DEFAULT 'scheduled', source text,
                created_at timestamptz DEFAULT now(), deleted_at timestamptz)""").format(
            call_id=sql.Identifier(name(1)), booking=sql.Identifier(name(2)),
            link=sql.Identifier(name(3)), abooking=sql.Identifier(name(4))))
    profile = tmp_path / "hostile.toml"
    profile.write_text("\n".join([
        f"name = {toml(value('profile'))}",
        "[calls]", f"call_id = {toml(name(1))}", f"booking_id = {toml(name(2))}",
        f"appointment_links = [{toml(name(3))}]",
        "[appointments]", f"booking_id = {toml(name(4))}",
        f"voice_agent_sources = [{toml(value('source'))}]",
        "[link_status]", *(f"{s} = {toml(value(s))}" for s in STATES),
        "[session_outcome]", *(f"{s} = {toml(value(s))}" for s in (
            "appointment_booked", "appointment_rescheduled", "creation_failed")),
        "[customer_link_status]", f"linked = {toml(value('c-linked'))}",
        f"unlinked = {toml(value('c-unlinked'))}",
        "[customer_link_method]", f"phone_match = {toml(value('phone'))}",
        "[direction]", f"inbound = {toml(value('inbound'))}", ""]), encoding="utf-8")

    installed = run_cli("migrate", "--profile", str(profile), "--dsn", empty_db)
    assert installed.code == 0, installed
    with psycopg.connect(empty_db, autocommit=True) as conn:
        call = conn.execute(sql.SQL(
            "INSERT INTO public.calls ({}, session_outcome) VALUES ('c-1', %s) RETURNING id"
        ).format(sql.Identifier(name(1))), [value("appointment_booked")]).fetchone()[0]
        conn.execute(sql.SQL("INSERT INTO public.appointments (call_id, {}, source) "
                             "VALUES (%s, 'b-1', %s)").format(sql.Identifier(name(4))),
                     [call, value("source")])
        link, direction = conn.execute(
            "SELECT appointment_link_status, direction FROM public.calls WHERE id = %s",
            [call]).fetchone()
    assert (link, direction) == (value("linked"), value("inbound"))
    assert run_cli("check", "--dsn", empty_db).code == 0
    status = run_cli("migrate", "status", "--dsn", empty_db)
    assert status.code == 0 and "up to date" in status.out, status
