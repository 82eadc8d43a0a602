"""Connection strings: errors that never show a secret of the DSN, without
ever reaching a server."""

from __future__ import annotations

import pytest

from orchestrator import db
from orchestrator.errors import GuardError

# The three shapes in which libpq quotes a connection string it cannot parse.
BROKEN = [
    ("postgresql://user:pa%zzS3cret@localhost/db", "S3cret", "percent-encoded"),
    ("host=localhost user=u password=foo S3cretPW", "S3cretPW", 'missing "="'),
    ("postgresql://user:S3cretPW@[::1/db", "S3cretPW", "IPv6 host address"),
]


@pytest.mark.parametrize(("broken", "secret", "reason"), BROKEN)
def test_a_malformed_dsn_is_reported_without_its_secret(broken, secret, reason, run_cli) -> None:
    with pytest.raises(GuardError) as exc:
        db.connect(broken)
    message = str(exc.value)
    assert message.startswith("invalid connection string") and reason in message
    assert secret not in message and "zzS3" not in message

    result = run_cli("config", "show", "--dsn", broken)
    assert result.code == 2 and result.err.count("\n") == 1
    assert secret not in result.err and "Traceback" not in result.err


def test_redaction_keeps_what_helps() -> None:
    message = 'end of string reached when looking for matching "]" in IPv6 host address in ' \
              'URI: "postgresql://ann:S3cretPW@[::1/db"'
    redacted = db.redact(message, "postgresql://ann:S3cretPW@[::1/db")
    assert redacted.endswith('"postgresql://ann:***@[::1/db"') and '"]"' in redacted
    assert db.redact('invalid connection option "sslmod"', "sslmod=x password=pw") == \
        'invalid connection option "***"'
    assert db.redact('invalid sslmode value: "verify"', "sslmode=verify") == \
        'invalid sslmode value: "verify"'
    unreachable = 'connection to server at "10.0.0.1", port 5 failed: Connection refused'
    assert db.redact(unreachable, "postgresql://ann:S3cretPW@10.0.0.1:5/db") == unreachable
