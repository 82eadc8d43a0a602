"""Adoption profiles: where an existing application differs from the guard's
vocabulary (DESIGN.md, "Installing on an existing application").

A profile is a TOML file given to ``consistency migrate --profile FILE``. It is
validated here (unknown keys and bad values: one line each), stored in the
database by migrate, and rendered into the guard's SQL (orchestrator.render).
Every key is optional; a missing key keeps the guard's own name or value, so
the empty profile is the default vocabulary.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from orchestrator.errors import GuardError


def _plain(text: str) -> str:
    # Profile values are quoted by the server into function bodies that are
    # dollar-quoted ($$ ... $$): a "$" could end such a body early. A line
    # break ends a "--" comment, and no name or value needs one (nor any
    # other character that does not print: they end up in logs and messages).
    if "$" in text:
        raise ValueError("must not contain '$'")
    if not text.isprintable():
        raise ValueError(f"must be printable: no control character or line break ({text!r})")
    return text


def _identifier(text: str) -> str:
    # PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1): a
    # longer name would silently name another column.
    if len(text.encode("utf-8")) > 63:
        raise ValueError("a column name has at most 63 bytes")
    return _plain(text)


Identifier = Annotated[str, StringConstraints(min_length=1), AfterValidator(_identifier)]
Value = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_plain)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CallsColumns(_Section):
    # The column holding the voice platform's call id.
    call_id: Identifier = "external_call_id"
    # The booking id the agent got from the calendar, on the call.
    booking_id: Identifier = "external_booking_id"
    # Other columns of calls that point to the call's appointment. None: not
    # stated (an undeclared foreign key from calls to appointments is then a
    # difference migrate refuses); [] says there are none.
    appointment_links: list[Identifier] | None = None

    @model_validator(mode="after")
    def _distinct_links(self) -> CallsColumns:
        links = self.appointment_links or []
        if len(set(links)) != len(links):
            raise ValueError("appointment_links: a column is listed twice")
        if {"id", self.call_id, self.booking_id} & set(links):
            raise ValueError("appointment_links: must not name id, call_id or booking_id")
        return self


class AppointmentsColumns(_Section):
    booking_id: Identifier = "external_booking_id"
    # appointments.source values that mean "booked by the voice agent".
    voice_agent_sources: Annotated[list[Value], Field(min_length=1)] = ["voice_agent"]


class LinkStatus(_Section):
    """The application's value for each state of calls.appointment_link_status."""

    unlinked: Value = "unlinked"
    pending_creation: Value = "pending_creation"
    linked: Value = "linked"
    cancelled: Value = "cancelled"
    creation_failed: Value = "creation_failed"
    not_applicable: Value = "not_applicable"

    @model_validator(mode="after")
    def _distinguishable(self) -> LinkStatus:
        # The guard decides by these values: the states it must tell apart
        # may not share one. cancelled and creation_failed may (both end a
        # booking), and not_applicable may share any but linked and
        # pending_creation (the guard never writes it).
        must_differ = [("linked", "unlinked"), ("linked", "pending_creation"),
                       ("linked", "cancelled"), ("linked", "creation_failed"),
                       ("linked", "not_applicable"), ("unlinked", "pending_creation"),
                       ("unlinked", "cancelled"), ("unlinked", "creation_failed"),
                       ("pending_creation", "cancelled"),
                       ("pending_creation", "creation_failed"),
                       ("pending_creation", "not_applicable")]
        clashes = [f"{a} and {b} are both {getattr(self, a)!r}" for a, b in must_differ
                   if getattr(self, a) == getattr(self, b)]
        if clashes:
            raise ValueError("; ".join(clashes) + ": the guard must tell these states apart")
        return self


class SessionOutcome(_Section):
    appointment_booked: Value = "appointment_booked"
    appointment_rescheduled: Value = "appointment_rescheduled"
    # What rollback_booking writes for a booking that never produced an appointment.
    creation_failed: Value = "creation_failed"

    @model_validator(mode="after")
    def _distinct(self) -> SessionOutcome:
        if self.creation_failed in (self.appointment_booked, self.appointment_rescheduled):
            raise ValueError("creation_failed must not be a booking outcome")
        return self


class CustomerLinkStatus(_Section):
    linked: Value = "linked"
    unlinked: Value = "unlinked"

    @model_validator(mode="after")
    def _distinct(self) -> CustomerLinkStatus:
        if self.linked == self.unlinked:
            raise ValueError("linked and unlinked must differ")
        return self


class CustomerLinkMethod(_Section):
    # Written when a customer is linked without a method.
    phone_match: Value = "phone_match"


class Direction(_Section):
    # Written for a call without a direction (G6).
    inbound: Value = "inbound"


class Profile(_Section):
    name: Value = "default"
    # Zone of every `timestamp without time zone` column of calls and appointments.
    time_zone: Value = "UTC"
    calls: CallsColumns = CallsColumns()
    appointments: AppointmentsColumns = AppointmentsColumns()
    link_status: LinkStatus = LinkStatus()
    session_outcome: SessionOutcome = SessionOutcome()
    customer_link_status: CustomerLinkStatus = CustomerLinkStatus()
    customer_link_method: CustomerLinkMethod = CustomerLinkMethod()
    direction: Direction = Direction()

    @property
    def links(self) -> list[str]:
        return list(self.calls.appointment_links or [])

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> Profile:
        return cls.model_validate(json.loads(data) if isinstance(data, str) else data)


DEFAULT = Profile()


class ProfileError(GuardError):
    """Several one-line problems, printed one per line (and notes that did
    not stop anything, printed after them)."""

    def __init__(self, lines: list[str], notes: list[str] | None = None) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines
        self.notes = notes or []


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {where}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse(text: str, source: str, name: str | None = None) -> Profile:
    """Validate a profile's TOML text; every problem is one line. ``name``
    is the profile's name when the text gives none."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError([f"profile {source}: not valid TOML: {exc}"]) from exc
    if name is not None:
        data.setdefault("name", name)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError([f"profile {source}: {_describe(e)}" for e in exc.errors()]) from None


def load(path: str | Path) -> tuple[Profile, str]:
    """The profile in ``path`` and its text (stored beside it in the database)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError([f"profile {path}: cannot read it: {exc}"]) from exc
    return parse(text, str(path), Path(path).stem), text
