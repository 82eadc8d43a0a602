"""Which database errors are the guard refusing something (one line for a
person, GuardError) and which are not (they stay psycopg's)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from orchestrator import db
from orchestrator.errors import GuardError


@pytest.mark.parametrize("error", [
    errors.InvalidParameterValue("circuit key must not be empty"),  # 22023
    errors.NoDataFound("call 7 does not exist"),                     # P0002
    errors.InsufficientPrivilege("permission denied for function run_check"),
    errors.UndefinedObject('unknown setting "x"'),                   # 42704
    errors.UniqueViolation("duplicate key value"),                   # 23505
    errors.InvalidTextRepresentation("invalid input syntax for type json"),  # 22P02
])
def test_refusals_become_one_line(error: psycopg.Error) -> None:
    refused = db.refusal(error)
    assert isinstance(refused, GuardError) and refused.exit_code == 2
    assert str(refused) == str(error)


@pytest.mark.parametrize("error", [
    errors.SerializationFailure("could not serialize"),
    errors.AdminShutdown("terminating connection"),
    errors.QueryCanceled("canceling statement due to statement timeout"),
    errors.InternalError_("bug"),
    psycopg.OperationalError("connection lost"),
    errors.UndefinedFunction("function public.f() does not exist"),
])
def test_other_errors_are_not_refusals(error: psycopg.Error) -> None:
    assert db.refusal(error) is None
    with pytest.raises(type(error)), db.refusals():
        raise error


def test_a_database_without_the_guard_says_what_to_run() -> None:
    missing_schema = db.refusal(errors.InvalidSchemaName('schema "consistency" does not exist'))
    assert str(missing_schema) == db.NOT_INSTALLED
    missing = db.refusal(errors.UndefinedFunction(
        "function consistency.check_findings(interval) does not exist"))
    assert str(missing).endswith("run `consistency migrate`")
    assert "consistency.check_findings(interval)" in str(missing)


def test_the_refusal_keeps_its_cause() -> None:
    error = errors.NoDataFound("review item 9 does not exist")
    with pytest.raises(GuardError) as caught, db.refusals():
        raise error
    assert caught.value.__cause__ is error
