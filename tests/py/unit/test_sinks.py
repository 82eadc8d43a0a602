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


def test_slack_shows_what_an_alert_says_as_text_never_as_markup() -> None:
    import json
    from datetime import UTC, datetime

    from orchestrator.alerts import Alert
    from orchestrator.relay.base import SinkURL
    from orchestrator.relay.slack import SlackSink

    sink = SlackSink(SinkURL.parse("slack+https://hooks.example.com/services/T/B/X"))
    hostile = "<!channel> key <@U123> & <https://evil.example|the dashboard>"
    alert = Alert(7, "circuit_opened", "critical", "circuit", 3, hostile, {},
                  datetime(2030, 1, 1, tzinfo=UTC), False)
    payload = json.dumps(sink.payload(alert))
    assert "<!channel>" not in payload and "<@U123>" not in payload and "<https://" not in payload
    assert "&lt;!channel&gt; key &lt;@U123&gt; &amp; &lt;https://evil.example|the dashboard&gt;" \
        in payload

    flood = Alert(8, "x", "warning", "call", 1, "<" * 5000, {},
                  datetime(2030, 1, 1, tzinfo=UTC), False)
    section = sink.payload(flood)["blocks"][2]["text"]["text"]
    assert len(section) <= 2900 and section == "&lt;" * (len(section) // 4), \
        "cut within Slack's limit, never in the middle of an entity"


def test_blocking_sends_hold_a_bounded_number_of_threads() -> None:
    """Ten sends that block (a dripping server behind a blocking library),
    each given up at its deadline: at most `limit` threads are ever alive;
    once they are freed, sends run again."""
    import asyncio
    import threading

    from orchestrator.relay.base import BlockingThreads

    threads = BlockingThreads("test-sink", limit=4)
    stuck = threading.Event()

    def alive() -> int:
        return sum(t.name == "relay-blocking-send" for t in threading.enumerate())

    async def send_once() -> str:
        try:
            async with asyncio.timeout(0.3):
                await threads.run(lambda: stuck.wait(10))
        except TimeoutError:
            return "deadline"
        return "sent"

    async def flood() -> list[str]:
        return await asyncio.gather(*(send_once() for _ in range(10)))

    before = alive()
    assert asyncio.run(flood()) == ["deadline"] * 10
    assert alive() - before == 4 and threads.alive == 4, "six sends never got a thread"
    stuck.set()
    for _ in range(100):
        if threads.alive == 0:
            break
        threading.Event().wait(0.02)
    assert threads.alive == 0
    assert asyncio.run(threads.run(lambda: "sent")) == "sent"
