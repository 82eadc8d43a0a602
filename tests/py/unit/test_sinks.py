"""Sink URLs and HTTP answers, parsed without sending anything."""

from __future__ import annotations

from orchestrator.relay.httppost import retry_after_seconds


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") < 1
    for endless in ("inf", "Infinity", "-inf", "nan", "NaN"):
        assert retry_after_seconds(endless) is None, endless
    assert retry_after_seconds("1e300") == 1e300, "huge but finite: the relay bounds it"
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT") > 1e11


def test_sink_names_show_no_secret_and_tell_sinks_apart() -> None:
    from orchestrator.relay.base import SinkURL

    for raw in ("pover://someuser@secretapptoken", "ntfy://my-secret-topic-9f3a"):
        url = SinkURL.parse(raw)
        assert url.name == f"{url.scheme}://***#{url.fingerprint[:6]}"
    one = SinkURL.parse("webhook+https://hooks.example:8443/p/secret1")
    two = SinkURL.parse("webhook+https://hooks.example:8443/p/secret2")
    assert one.name.startswith("webhook+https://hooks.example:8443/***#")
    assert one.name != two.name, "two sinks on one host are told apart"
    assert "secret" not in one.name + two.name

