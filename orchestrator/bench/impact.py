"""`consistency bench` without a subcommand: every benchmark in one run, on
one server, summed up in one "performance impact" table: per operation the
figure without the guard (baseline), with the guard, with the naive variant
where one exists (row-level triggers, a locking acquire, counting instead of
counters), the overhead (guard / baseline), the target and whether it is met.

Each sub-benchmark runs as its own subcommand would (its module's ``run``),
at the scale of a profile: FULL (the subcommands' defaults), QUICK (under
3 minutes on 2 cores) or TINY (the test suite's smoke run). One that fails
is reported as such and the others still run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.bench import check, circuit, relay, serve, triggers, validation

# The closed path's median budget (docs/benchmarks.md, "bench circuit").
CIRCUIT_CLOSED_TARGET_MS = 0.15

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "triggers": {"calls": 100_000, "repeat": 15},
        "validation": {"calls": 100_000, "repeat": 2000},
        "circuit": {"repeat": 2000, "seconds": 3.0, "clients": 8},
        "check": {"sizes": (100_000, 1_000_000), "repeat": 7},
        "relay": {"alerts": 3000, "samples": 200, "hang_rounds": 3},
        "serve": {"calls": 1_000_000, "alerts": 1_000_000, "repeat": 30, "write_repeat": 1000},
    },
    "quick": {
        "triggers": {"calls": 100_000, "repeat": 7},
        "validation": {"calls": 100_000, "repeat": 500},
        "circuit": {"repeat": 500, "seconds": 1.0, "clients": 8},
        "check": {"sizes": (100_000,), "repeat": 5},
        "relay": {"alerts": 1000, "samples": 100, "hang_rounds": 1},
        "serve": {"calls": 200_000, "alerts": 200_000, "repeat": 10, "write_repeat": 200},
    },
    "tiny": {
        # A workload of each kind (a first appointment, a batch, an alerting
        # update, an alerting batch): the smoke run of the suite.
        "triggers": {"calls": 1000, "repeat": 1,
                     "workloads": ("first_1", "insert_select_100", "cancel_only",
                                   "delete_100_last")},
        "validation": {"calls": 200, "repeat": 20},
        "circuit": {"repeat": 20, "seconds": 0.2, "clients": 2},
        "check": {"sizes": (500,), "repeat": 1, "writers": False},
        "relay": {"alerts": 50, "samples": 5, "hang_rounds": 1},
        "serve": {"calls": 500, "alerts": 500, "repeat": 1, "write_repeat": 5},
    },
}

BENCHMARKS = ("triggers", "validation", "circuit", "check", "relay", "serve")


@dataclass
class Row:
    """One line of the impact table. ``better`` says which way the target
    points: "lower" (a time, a ratio) or "higher" (a rate)."""

    id: str
    benchmark: str
    operation: str
    unit: str
    guard: float | None
    baseline: float | None = None
    naive: float | None = None
    naive_label: str | None = None
    target: float | None = None
    better: str = "lower"
    # What the target applies to: the guard's figure, or its overhead.
    target_of: str = "guard"
    error: str | None = None

    @property
    def overhead(self) -> float | None:
        if self.guard is None or not self.baseline:
            return None
        return self.guard / self.baseline

    @property
    def measured(self) -> float | None:
        return self.overhead if self.target_of == "overhead" else self.guard

    @property
    def met(self) -> bool | None:
        if self.target is None or self.measured is None:
            return None
        return (self.measured <= self.target if self.better == "lower"
                else self.measured >= self.target)

    @property
    def target_share(self) -> float | None:
        """The measured figure as a share of its target (1 = at the target,
        above 1 = missed), whichever way the target points."""
        if self.target is None or not self.measured:
            return None
        return (self.measured / self.target if self.better == "lower"
                else self.target / self.measured)

    def naive_share(self) -> float | None:
        if self.target is None or self.naive is None:
            return None
        value = self.naive / self.baseline if self.target_of == "overhead" and self.baseline \
            else self.naive
        return value / self.target if self.better == "lower" else self.target / value

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overhead": self.overhead, "met": self.met}


@dataclass
class Report:
    profile: str
    server: str
    rows: list[Row] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def all_met(self) -> bool:
        return not self.errors and all(r.met is not False for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "server": self.server, "seconds": self.seconds,
                "rows": [r.as_dict() for r in self.rows], "errors": self.errors,
                "all_met": self.all_met, "results": self.results}


# --- turning each benchmark's result into rows -------------------------------------

def _trigger_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for name, w in r["workloads"].items():
        rows.append(Row(f"triggers.{name}", "triggers", f"appointments: {w['label']}", "ms",
                        w["guard"]["median_ms"], w["baseline"]["median_ms"],
                        w["row_level"]["median_ms"], "row-level triggers", w["target"],
                        target_of="overhead"))
    return rows


def _validation_rows(r: dict[str, Any]) -> list[Row]:
    worst = max(r["variants"], key=lambda v: v["p95_ms"])
    return [Row("validation.p95", "validation",
                "validate_booking, p95 of the worst variant",
                "ms", worst["p95_ms"], target=r["target_p95_ms"])]


def _circuit_rows(r: dict[str, Any]) -> list[Row]:
    lat = r["latency_ms"]
    rows = [Row("circuit.closed_path", "circuit", "circuit_acquire, closed", "ms",
                lat["closed path"]["median_ms"],
                lat["round trip"]["median_ms"], lat["locking acquire"]["median_ms"],
                "locking acquire (FOR UPDATE)", CIRCUIT_CLOSED_TARGET_MS),
            Row("circuit.transition", "circuit", "circuit_acquire, open -> half_open", "ms",
                lat["transition path"]["median_ms"], lat["round trip"]["median_ms"])]
    client = r["client"]["latency_ms"]
    call = client.get(circuit.circuit_client.CALL)
    if call is not None:
        peer = client.get(circuit.circuit_client.PB_CALL)
        rows.append(Row("circuit.breaker_call", "circuit",
                        "breaker.call(noop), closed", "ms",
                        call["median_ms"], naive=peer["median_ms"] if peer else None,
                        naive_label="pybreaker + Redis storage" if peer else None))
    return rows


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else \
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _check_rows(r: dict[str, Any]) -> list[Row]:
    return [Row(f"check.{x['scope'].replace(' ', '_')}.{x['calls']}", "check",
                f"run_check, {x['scope']}, {_count(x['calls'])} calls", "ms",
                x["median_ms"], target=x["target_ms"]) for x in r["results"]]


def _relay_rows(r: dict[str, Any]) -> list[Row]:
    rows = r["throughput"]
    one = rows[0]
    targets = r["targets"]
    return [
        Row("relay.throughput", "relay", "relay to a webhook", "alerts/s",
            one["alerts_per_s"], target=targets["alerts_per_s"], better="higher"),
        Row("relay.hanging_sink", "relay", "relay beside a hanging sink", "alerts/s",
            rows[-1]["alerts_per_s"], rows[-2]["alerts_per_s"], target=targets[
                "hanging_sink_ratio"], better="higher", target_of="overhead"),
        Row("relay.latency_p99", "relay", "relay latency, commit to delivery, p99", "ms",
            r["latency_ms"]["p99_ms"], target=targets["p99_ms"]),
    ]


def _serve_rows(r: dict[str, Any]) -> list[Row]:
    by_name = {v["variant"]: v for v in r["variants"]}
    scrape = by_name["metrics() (the scrape query)"]
    naive = by_name.get("counting alerts + archive + deliveries instead")
    writes = {w["variant"]: w for w in r["write_cost"]}
    with_counters = writes["guard"]
    without = next(w for name, w in writes.items() if name != "guard")
    return [
        Row("serve.scrape", "serve", f"scrape, {_count(r['calls'])} calls and alerts", "ms",
            scrape["median_ms"],
            naive=naive["median_ms"] if naive else None, naive_label="counting rows instead",
            target=r["target_ms"]),
        Row("serve.alert_writes", "serve", "raising 20 alerts", "ms",
            with_counters["median_ms"], without["median_ms"]),
    ]


@dataclass(frozen=True)
class Benchmark:
    name: str
    run: Callable[..., dict[str, Any]]
    rows: Callable[[dict[str, Any]], list[Row]]


SUITE = {
    "triggers": Benchmark("triggers", triggers.run, _trigger_rows),
    "validation": Benchmark("validation", validation.run, _validation_rows),
    "circuit": Benchmark("circuit", circuit.run, _circuit_rows),
    "check": Benchmark("check", check.run, _check_rows),
    "relay": Benchmark("relay", relay.run, _relay_rows),
    "serve": Benchmark("serve", serve.run, _serve_rows),
}


def run(admin_dsn: str, profile: str = "full", server: str = "",
        progress: Callable[[str], None] | None = None,
        only: tuple[str, ...] = BENCHMARKS) -> Report:
    say = progress or (lambda _msg: None)
    report = Report(profile, server)
    for name in only:
        bench = SUITE[name]
        params = dict(PROFILES[profile][name])
        if name in ("triggers", "serve") and progress is not None:
            params["progress"] = lambda m, n=name: say(f"{n}: {m}")
        say(f"{name} ({', '.join(f'{k}={v}' for k, v in PROFILES[profile][name].items())})")
        started = time.monotonic()
        try:
            result = bench.run(admin_dsn, **params)
            report.rows += bench.rows(result)
            report.results[name] = result
        except Exception as exc:  # one benchmark's failure must not hide the others' figures
            report.errors[name] = f"{exc.__class__.__name__}: {exc}"
            say(f"{name} failed: {report.errors[name]}\n{traceback.format_exc(limit=3)}")
        report.seconds[name] = round(time.monotonic() - started, 1)
    return report


# --- printing and plotting ------------------------------------------------------------

COLUMNS = ("operation", "unit", "baseline", "with guard", "naive", "overhead", "target", "met")

# What "baseline" and "naive" mean, per benchmark; medians unless the row says.
LEGEND = (
    "appointments: baseline no trigger, naive row-level triggers (one UPDATE per row)",
    "circuit_acquire: baseline a bare round trip (SELECT $1), naive a locking acquire "
    "(FOR UPDATE); breaker.call: naive pybreaker with its Redis storage",
    "run_check: ~1 % drift; relay beside a hanging sink: baseline without it",
    "scrape: naive counting rows instead of the counters; raising 20 alerts: baseline without "
    "the counters",
)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "alerts/s":
        return f"{value:,.0f}"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    sign = "<=" if row.better == "lower" else ">="
    if row.target_of == "overhead":
        return f"{sign} {row.target:g}x"
    return f"{sign} {_number(row.target, row.unit)} {row.unit}"


def table_rows(report: Report) -> list[list[str]]:
    rows = []
    for r in report.rows:
        rows.append([r.operation, r.unit, _number(r.baseline, r.unit), _number(r.guard, r.unit),
                     _number(r.naive, r.unit),
                     "" if r.overhead is None else f"{r.overhead:.2f}x", _target(r),
                     {True: "yes", False: "NO", None: ""}[r.met]])
    for name, error in report.errors.items():
        rows.append([f"bench {name}", "", "", "", "", "", "", f"failed: {error}"])
    return rows


def plot(report: Report, path: str) -> None:
    """One horizontal bar per operation with a target: its figure as a share
    of the target (1 = at the target), the naive variant beside it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [r for r in report.rows if r.target_share is not None]
    height = max(3.0, 0.45 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(11, height))
    labels = [r.operation if len(r.operation) <= 70 else r.operation[:67] + "..." for r in rows]
    ys = list(range(len(rows)))[::-1]
    ax.barh([y + 0.18 for y in ys], [r.target_share for r in rows], height=0.36,
            color=["#2e7d32" if r.met else "#c62828" for r in rows], label="with guard")
    naive = [(y, r.naive_share()) for y, r in zip(ys, rows, strict=True)
             if r.naive_share() is not None]
    if naive:
        ax.barh([y - 0.18 for y, _ in naive], [s for _, s in naive], height=0.36,
                color="#9e9e9e", label="naive variant")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="target")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("share of the target (lower is better; above 1: target missed)")
    ax.set_title(f"consistency bench ({report.profile}): {report.server}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
