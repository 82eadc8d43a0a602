"""`consistency demo`: a voice agent's day at high speed, with the guard on.

A throwaway PostgreSQL (``orchestrator/pgcluster.py``) or a database of its
own on the server of ``--dsn``; the guard installed; then, for ``minutes`` of
real time, each real second playing ``speed`` seconds of a day from 08:00:

- callers phone the agent; some bookings go through ``CircuitBreaker`` to a
  fake calendar API (a local HTTP server of this module) that has an outage
  in the middle of the run: the circuit opens, refuses bookings fast (each
  queued for review), lets probes through, and closes when the calendar is
  back;
- the calendar's webhook turns each booking into an appointment, which the
  agent validates; some never arrive (phantom bookings), some arrive without
  their call (orphans), some with another booking id (validation fails, the
  booking is rolled back);
- later callers cancel or move appointments; some calls come without a
  direction; the front desk imports a batch of appointments in one
  statement; a legacy feed writes calls with triggers off;
- beside them, what ``consistency up`` runs (``orchestrator/up.py``): the
  monitor's check loop, the relay (stdout and any ``--sink``), and with
  ``--serve`` the dashboard.

The guard's timers (max booking age, circuit cooldown and timeout, check
interval) are divided by ``speed``, with floors so that a loaded machine does
not time out healthy calls. At the end: a last check, the daily report, and
a summary whose every figure is read back from the database.
"""

from orchestrator.demo.run import DemoResult, narrative, run, summary_rows
from orchestrator.demo.script import DemoOptions, Timers

__all__ = ["DemoOptions", "DemoResult", "Timers", "narrative", "run", "summary_rows"]
