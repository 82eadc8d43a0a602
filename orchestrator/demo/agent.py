"""The voice agent, the calendar's webhook, later callers, the front desk's
import and a legacy feed: the writes an application makes, as it makes them."""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import ConnectionPool

from orchestrator import breaker as breaker_mod
from orchestrator import db
from orchestrator.demo.calendar import Calendar, CalendarError
from orchestrator.demo.script import AGENT_LINES, KEY, Clock, Events


class Agent:
    """Plays the calls: each one a short script of the agent's, the
    calendar's and later callers' writes, as the application would make them."""

    def __init__(self, dsn: str, calendar: Calendar, seed: int, as_app: bool) -> None:
        self.calendar = calendar
        self.seed = seed
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.breaker = breaker_mod.CircuitBreaker(KEY, dsn=dsn)
        self.pool = ConnectionPool(db.session_conninfo(dsn), min_size=2, max_size=AGENT_LINES,
                                   kwargs={"autocommit": True, "application_name": "demo agent"},
                                   configure=self._configure if as_app else None, open=True)
        self._serial = 0
        self._bookings = 0

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        conn.execute(db.query("demo_act_as_app"))

    def close(self) -> None:
        self.pool.close()

    def _confirmed(self) -> int:
        with self._rng_lock:
            self._bookings += 1
            return self._bookings

    def _draw(self) -> tuple[float, int, int]:
        with self._rng_lock:
            self._serial += 1
            return self.rng.random(), self.rng.randrange(1, 400), self._serial

    def call(self) -> None:
        draw, customer, serial = self._draw()
        with self.pool.connection() as conn:
            if draw < 0.50:
                self._booking(conn, customer, serial, self.rng_sub(serial))
            elif draw < 0.60:
                self._cancel(conn, customer, serial)
            elif draw < 0.68:
                self._move(conn, customer, serial)
            else:
                self._information(conn, customer, serial, draw)

    def rng_sub(self, serial: int) -> random.Random:
        return random.Random(f"{self.seed}-{serial}")

    def _insert(self, conn: psycopg.Connection, customer: int, serial: int,
                outcome: str | None = None, made: bool = False) -> int:
        # One caller in seven comes from a telephony route that sends no
        # direction: G6 makes it inbound as the row is written.
        direction = None if serial % 7 == 3 else "inbound"
        return int(conn.execute(db.query("demo_call_insert"), {
            "external_call_id": f"demo-{serial}-{uuid.uuid4().hex[:6]}",
            "customer_id": customer, "direction": direction,
            "from_number": f"+49151{customer:07d}", "outcome": outcome,
            "appointment_made": made}).fetchone()[0])

    def _booking(self, conn: psycopg.Connection, customer: int, serial: int,
                 rng: random.Random) -> None:
        call_id = self._insert(conn, customer, serial)
        slot = (datetime.now(UTC) + timedelta(days=1 + rng.randrange(14))).isoformat()
        try:
            outcome = breaker_mod.book_or_queue(
                self.breaker, call_id, self.calendar.book, slot,
                review_context={"slot": slot, "customer_id": customer})
        except (CalendarError, breaker_mod.CallTimeoutError) as exc:
            conn.execute(db.query("demo_call_booking_failed"),
                         {"call_id": call_id, "reason": str(exc)[:200]})
            conn.execute(db.query("demo_review_enqueue"), {
                "call_id": call_id, "reason": "calendar_booking_failed",
                "context": json.dumps({"error": str(exc)[:200], "slot": slot})})
            return
        if not outcome.booked:
            conn.execute(db.query("demo_call_outcome"),
                         {"call_id": call_id, "outcome": "callback_requested"})
            return
        booking_id = str(outcome.result)
        conn.execute(db.query("demo_call_booked"), {"call_id": call_id, "booking_id": booking_id})
        # Of every 12 confirmed bookings, one never arrives (phantom), one
        # arrives without its call (orphan), one under another booking id.
        fate = self._confirmed() % 12
        if fate == 2:
            return  # phantom: the calendar's webhook never comes
        orphan = fate == 5
        webhook_id = f"{booking_id}-dup" if fate == 8 else booking_id
        conn.execute(db.query("demo_appointment_webhook"), {
            "call_id": None if orphan else call_id, "customer_id": customer,
            "starts_at": slot, "booking_id": webhook_id})
        if orphan:
            return  # nothing to validate the call against; the monitor links it
        ok, reason, _ = conn.execute(db.query("validate_booking"), {
            "call_id": call_id, "appointment_id": None,
            "external_booking_id": booking_id}).fetchone()
        if not ok:
            with conn.transaction():
                conn.execute(db.query("rollback_booking"),
                             {"call_id": call_id, "reason": reason, "actor": "voice agent"})

    def _existing(self, conn: psycopg.Connection, call_id: int, query: str) -> bool:
        with conn.transaction():
            row = conn.execute(db.query("demo_pick_appointment"),
                               {"offset": self.rng_sub(call_id).randrange(5)}).fetchone()
            if row is None:
                return False
            conn.execute(db.query(query), {"appointment_id": row[0], "call_id": call_id})
        return True

    def _cancel(self, conn: psycopg.Connection, customer: int, serial: int) -> None:
        call_id = self._insert(conn, customer, serial, outcome="appointment_cancelled")
        if not self._existing(conn, call_id, "demo_cancel_appointment"):
            conn.execute(db.query("demo_call_outcome"),
                         {"call_id": call_id, "outcome": "information_only"})

    def _move(self, conn: psycopg.Connection, customer: int, serial: int) -> None:
        call_id = self._insert(conn, customer, serial, outcome="appointment_rescheduled")
        if not self._existing(conn, call_id, "demo_move_appointment"):
            conn.execute(db.query("demo_call_outcome"),
                         {"call_id": call_id, "outcome": "information_only"})

    def _information(self, conn: psycopg.Connection, customer: int, serial: int,
                     draw: float) -> None:
        outcomes = ("information_only", "callback_requested", "voicemail", "transferred",
                    "abandoned", "spam")
        outcome = outcomes[int(draw * 1000) % len(outcomes)]
        # A bug of the agent's: "appointment made" on a call that booked
        # nothing. G2 corrects the flag as the row is written, and alerts.
        made = serial % 29 == 5
        self._insert(conn, customer, serial, outcome=outcome, made=made)


# --- scripted moments ---------------------------------------------------------------

def legacy_feed(dsn: str, events: Events, clock: Clock) -> None:
    """Calls from the legacy telephony system, written with triggers off."""
    with db.connect(dsn, application_name="demo legacy feed") as conn:
        if not conn.execute(db.query("demo_may_bypass_triggers")).fetchone()[0]:
            events.add(f"{clock.label()} legacy feed skipped: writing with triggers off needs "
                       "a superuser")
            conn.rollback()
            return
        with conn.transaction():
            conn.execute(db.query("demo_legacy_replica_role"))
            plain, booked, linked = conn.execute(db.query("demo_legacy_calls"), {
                "tag": uuid.uuid4().hex[:6], "plain": 6, "booked": 3, "linked": 4}).fetchone()
        conn.commit()
    events.add(f"{clock.label()} legacy feed, triggers off: {plain} calls without direction, "
               f"{booked} 'booked' with no booking, {linked} with appointments the calls "
               "do not show")


def batch_import(conn: psycopg.Connection, events: Events, clock: Clock) -> None:
    count = conn.execute(db.query("demo_batch_import"), {"limit": 40}).rowcount
    events.add(f"{clock.label()} front desk: {count} appointments imported in one statement "
               "for callers who asked to be called back")
