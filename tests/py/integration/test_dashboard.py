"""The dashboard in a real browser (system Chromium, headless, through
chromedriver): every panel drawn with data and no console error; the empty
state on a new database; a screenshot of each under the test's tmp dir."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator import server
from orchestrator.pgcluster import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PANELS = ("panel-alerts", "panel-rate", "panel-checks", "panel-circuits", "panel-review",
          "panel-relay")

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="chromium and chromium-driver are not installed (scripts/ensure-system-deps.sh)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def serve_url() -> Iterator[object]:
    running = []

    def _start(dsn: str, **options: object) -> str:
        opts = server.ServeOptions(port=free_port(), **options)
        running.append(server.start(dsn, opts))
        return f"http://127.0.0.1:{opts.port}/"

    yield _start
    for thread, database in running:
        thread.stop()
        database.close()


def fill(conn: psycopg.Connection) -> None:
    """A little of everything each panel shows."""
    calls = [conn.execute("INSERT INTO public.calls (external_call_id, session_outcome)"
                          " VALUES (%s, 'information_only') RETURNING id", [f"d-{i}"]).fetchone()[0]
             for i in range(10)]
    for i, call in enumerate(calls[:3]):
        conn.execute("SELECT consistency.raise_alert('appointment_unlinked', %s, 'call', %s,"
                     " 'lost its appointment')", [("critical", "warning", "info")[i], call])
    for _ in range(3):
        conn.execute("SELECT consistency.circuit_record_failure('appointment_booking:service:7',"
                     " 'timeout')")
    conn.execute("SELECT consistency.circuit_record_failure('calendar:availability', 'x')")
    conn.execute("SELECT consistency.circuit_force('<script>alert(1)</script>', 'disabled', 't',"
                 " 'hostile key')")
    conn.execute("SELECT consistency.review_enqueue(%s, 'appointment_rollback')", [calls[0]])
    conn.execute("SELECT consistency.review_enqueue(%s, 'service_not_found')", [calls[1]])
    sink = conn.execute("SELECT consistency.relay_register_sink(%s, 'webhook+https://hooks"
                        ".example/***', 'webhook+https')", ["c" * 64]).fetchone()[0]
    conn.execute("SELECT consistency.raise_alert('relay_test', 'warning', 'system', 1, 'd')")
    conn.execute("UPDATE consistency.relay_deliveries SET status = 'dead', attempts = 5,"
                 " dead_at = now()"
                 " WHERE sink_id = %s AND alert_id = (SELECT max(id) FROM consistency.alerts)",
                 [sink])
    conn.execute("UPDATE consistency.relay_sinks SET last_success_at = now() - interval '3 min'"
                 " WHERE id = %s", [sink])
    conn.execute("SELECT consistency.raise_alert('relay_test', 'warning', 'system', 2, 'd')")
    for _ in range(3):
        conn.execute("SELECT count(*) FROM consistency.run_check()")
    conn.commit()


def console_errors(driver: object) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def load(driver: object, url: str, shot: Path) -> None:
    driver.get(url)
    driver.find_element("id", "panels")
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_every_panel_is_drawn_with_data(conn, dsn, browser, serve_url, tmp_path) -> None:
    fill(conn)
    load(browser, serve_url(dsn, refresh_seconds=2), tmp_path / "dashboard.png")
    assert browser.find_elements("id", "empty-state") == []
    for panel_id in PANELS:
        panel = browser.find_element("id", panel_id)
        assert panel.find_elements("css selector", ".panel-empty") == [], panel_id
        drawn = panel.find_elements("css selector", "svg, table")
        assert drawn and drawn[0].size["height"] > 50, panel_id
    charts = browser.find_elements("css selector", ".panel svg.pygal-chart")
    assert len(charts) == 5
    circuits = browser.find_element("id", "panel-circuits").text
    assert "<script>alert(1)</script>" in circuits, "a hostile key is shown as text"
    assert "appointment_booking:service:7" in circuits and "open" in circuits
    assert "webhook+https://hooks.example/***" in browser.find_element("id", "panel-relay").text
    assert console_errors(browser) == []
    # The panels refresh in place: a new alert shows up without a reload.
    before = browser.find_element("id", "kpi-alerts").text
    conn.execute("SELECT consistency.raise_alert('late', 'critical', 'system', 9, 'd')")
    conn.commit()
    deadline = time.monotonic() + 15
    while browser.find_element("id", "kpi-alerts").text == before:
        assert time.monotonic() < deadline, "the page did not refresh"
        time.sleep(0.2)
    assert console_errors(browser) == []
    browser.save_screenshot(str(tmp_path / "dashboard-refreshed.png"))


def test_a_new_database_shows_the_empty_state(dsn, browser, serve_url, tmp_path) -> None:
    load(browser, serve_url(dsn), tmp_path / "empty.png")
    assert browser.find_element("id", "empty-state").is_displayed()
    assert "Nothing to show yet" in browser.find_element("id", "empty-state").text
    for panel_id in PANELS:
        assert browser.find_element("id", panel_id).find_elements(
            "css selector", ".panel-empty"), panel_id
    assert console_errors(browser) == []
