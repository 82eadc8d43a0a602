"""`consistency bench ...`: each benchmark compares variants in one run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrator import db, output
from orchestrator.cli.common import dsn_option, example, json_option
from orchestrator.errors import GuardError
from orchestrator.output import print_json, say, table


def _progress(message: str) -> None:
    output.err.print(message, style="dim", markup=False)


@example("consistency bench --quick --plot bench.png\n"
         'consistency bench circuit --dsn "host=127.0.0.1 user=postgres"')
@click.group(invoke_without_command=True)
@dsn_option
@json_option
@click.option("--quick", is_flag=True, help="Small data sets: under 3 minutes on 2 cores.")
@click.option("--tiny", is_flag=True, hidden=True, help="Smaller still: the test suite's run.")
@click.option("--plot", metavar="FILE.png", default=None,
              help="Also draw the table (needs the plot extra: matplotlib).")
@click.pass_context
def bench(ctx: click.Context, dsn: str | None, as_json: bool, quick: bool, tiny: bool,
          plot: str | None) -> None:
    """Benchmarks: compare variants in one run on a scratch database.

    Without a subcommand: every benchmark, on the server of --dsn or on a
    throwaway cluster of its own, summed up in one table (baseline, with the
    guard, the naive variant, overhead, target, met). The subcommands take a
    DSN of a server where they may create and drop a database."""
    if ctx.invoked_subcommand is not None:
        if as_json or quick or tiny or plot:
            raise click.UsageError(f"put the options after `{ctx.invoked_subcommand}`: "
                                   "before it they belong to the run of every benchmark")
        # SIGTERM (kill, a CI timeout) ends a subcommand as Ctrl-C does: on
        # the way out it drops its scratch database, and bench serve its role.
        from orchestrator import pgcluster
        ctx.with_resource(pgcluster.sigterm_as_interrupt())
        return
    _bench_all(dsn, as_json, "tiny" if tiny else "quick" if quick else "full", plot)


def _bench_all(dsn: str | None, as_json: bool, profile: str, plot: str | None) -> None:
    from orchestrator import pgcluster
    from orchestrator.bench import impact

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise GuardError("--plot needs matplotlib: pip install "
                             "'consistency-guard[plot]'") from exc
    cluster = None
    # The throwaway cluster goes on Ctrl-C and on SIGTERM alike.
    with pgcluster.sigterm_as_interrupt():
        if dsn is None:
            cluster = pgcluster.Cluster(fast=False, prefix="consistency-guard-bench-")
            try:
                cluster.init()
                cluster.start()
            except BaseException:
                cluster.destroy()
                raise
            target = cluster.dsn()
            server = f"throwaway PostgreSQL, {cluster.binaries.describe()}"
        else:
            target, server = db.resolve_dsn(dsn), "the server of --dsn"
            db.connect(target).close()  # unreachable: one line, exit 2
        try:
            _progress(f"bench ({profile}) on {server}")
            report = impact.run(target, profile, server, _progress)
        finally:
            if cluster is not None:
                cluster.destroy()
    if as_json:
        print_json(report.as_dict())
    else:
        table(impact.COLUMNS, impact.table_rows(report),
              title=f"consistency bench ({profile}): performance impact on {server}")
        for line in impact.LEGEND:
            say(line)
        say("seconds per benchmark: " + ", ".join(f"{k} {v:g}" for k, v in
                                                   report.seconds.items()))
    if plot is not None:
        impact.plot(report, plot)
        say(f"plot: {plot}", to_stderr=True)
    if not report.all_met:
        sys.exit(1)


def _emit(report: Any, as_json: bool, printer: Callable[[Any], None]) -> None:
    if as_json:
        print_json(report)
    else:
        printer(report)


@example('consistency bench check --dsn "host=127.0.0.1 user=postgres" --calls 100000')
@bench.command("check")
@dsn_option
@json_option
@click.option("--calls", "sizes", type=click.IntRange(min=100), multiple=True,
              help="Dataset sizes (repeatable; default 100000 and 1000000).")
@click.option("--repeat", type=click.IntRange(min=1), default=7, show_default=True)
def bench_check(dsn: str | None, as_json: bool, sizes: tuple[int, ...], repeat: int) -> None:
    """run_check on the last hour and on the whole table, ~1 % drift."""
    from orchestrator.bench import check as mod

    _emit(mod.run(db.resolve_dsn(dsn), sizes or (100_000, 1_000_000), repeat), as_json,
          mod.print_report)


@example('consistency bench validation --dsn "host=127.0.0.1 user=postgres" --repeat 500')
@bench.command("validation")
@dsn_option
@json_option
@click.option("--calls", type=click.IntRange(min=10), default=100_000, show_default=True,
              help="Calls in the dataset.")
@click.option("--repeat", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Timed round trips per variant.")
def bench_validation(dsn: str | None, as_json: bool, calls: int, repeat: int) -> None:
    """validate_booking round trip: median and p95 per variant (target p95 < 5 ms)."""
    from orchestrator.bench import validation as mod

    _emit(mod.run(db.resolve_dsn(dsn), calls=calls, repeat=repeat), as_json, mod.print_report)


@example('consistency bench circuit --dsn "host=127.0.0.1 user=postgres" --json')
@bench.command("circuit")
@dsn_option
@json_option
@click.option("--repeat", default=2000, show_default=True, help="Timed calls per variant.")
@click.option("--seconds", default=3.0, show_default=True, help="Duration of each throughput run.")
@click.option("--clients", default=8, show_default=True, help="Threads in the throughput runs.")
def bench_circuit(dsn: str | None, as_json: bool, repeat: int, seconds: float,
                  clients: int) -> None:
    """circuit_acquire: closed path, transition path, locking variant, round-trip floor."""
    from orchestrator.bench import circuit as mod

    _emit(mod.run(db.resolve_dsn(dsn), repeat=repeat, seconds=seconds, clients=clients),
          as_json, lambda r: mod.print_result(r, output.out))


@example('consistency bench relay --dsn "host=127.0.0.1 user=postgres" --alerts 1000')
@bench.command("relay")
@dsn_option
@json_option
@click.option("--alerts", type=click.IntRange(1), default=3000, show_default=True,
              help="Alerts per throughput run.")
@click.option("--samples", type=click.IntRange(1), default=200, show_default=True,
              help="Alerts timed one by one for latency.")
@click.option("--hang-rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs of 1 relay without and with a hanging second sink (medians compared).")
def bench_relay(dsn: str | None, as_json: bool, alerts: int, samples: int,
                hang_rounds: int) -> None:
    """Alerts/s to a local webhook with 1 and 2 relays, and with a second sink
    that never answers; commit-to-delivery latency."""
    from orchestrator.bench import relay as mod

    _emit(mod.run(db.resolve_dsn(dsn), alerts=alerts, samples=samples,
                  hang_rounds=hang_rounds), as_json, lambda r: mod.print_report(r, output.out))


@example('consistency bench serve --dsn "host=127.0.0.1 user=postgres" --calls 100000')
@bench.command("serve")
@dsn_option
@json_option
@click.option("--calls", type=click.IntRange(min=100), default=1_000_000, show_default=True)
@click.option("--alerts", type=click.IntRange(min=100), default=1_000_000, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--write-repeat", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Samples of raising 20 alerts with and without the metric counters.")
def bench_serve(dsn: str | None, as_json: bool, calls: int, alerts: int, repeat: int,
                write_repeat: int) -> None:
    """Cost of one scrape (consistency.metrics()) at 1M calls and 1M alerts (target < 50 ms),
    and what the metric counters cost the writers of alerts."""
    from orchestrator.bench import serve as mod

    _emit(mod.run(db.resolve_dsn(dsn), calls=calls, alerts=alerts, repeat=repeat,
                  progress=None if as_json else (_progress),
                  write_repeat=write_repeat),
          as_json, mod.print_report)


@example('consistency bench triggers --dsn "host=127.0.0.1 user=postgres" --repeat 25')
@bench.command("triggers")
@dsn_option
@click.option("--calls", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Calls in the data set (as many appointments, ~60 % of calls linked).")
@click.option("--repeat", type=click.IntRange(min=1), default=15, show_default=True,
              help="Timed samples per workload and variant (after one warm-up round).")
@click.option("--workload", "workloads", multiple=True, metavar="NAME",
              help="Only this workload, e.g. cancel_only (repeatable; default every one).")
@click.option("--compare", "compare_files", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An extra server-side variant named after FILE: the guard, with FILE's SQL "
                   "(e.g. other versions of its functions) run inside each sample's "
                   "transaction first, as the --dsn role (repeatable).")
@json_option
def bench_triggers(dsn: str | None, calls: int, repeat: int, workloads: tuple[str, ...],
                   compare_files: tuple[Path, ...], as_json: bool) -> None:
    """Cost of the guarantees on a booking flow's writes: no guard vs row-level
    triggers vs the guard, timed in the server and from a client with commit;
    with --compare, against changed versions of the guard too."""
    from orchestrator.bench import render
    from orchestrator.bench import triggers as mod

    known = [w.name for w in mod.WORKLOADS]
    unknown = [w for w in workloads if w not in known]
    if unknown:
        raise click.BadParameter(f"unknown workload {unknown[0]!r}; one of: {', '.join(known)}",
                                 param_hint="--workload")
    compare: dict[str, str] = {}
    for path in compare_files:
        if path.stem in (*mod.VARIANTS, *compare):
            raise click.BadParameter(f"two variants named {path.stem!r}: rename the file",
                                     param_hint="--compare")
        try:
            compare[path.stem] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise click.BadParameter(f"{path}: not UTF-8 text", param_hint="--compare") from None
    results = mod.run(db.resolve_dsn(dsn), calls=calls, repeat=repeat,
                      progress=None if as_json else (_progress), workloads=workloads or None,
                      compare=compare)
    def show(r: dict[str, Any]) -> None:
        render(f"bench triggers, {calls} calls: server side, per statement in a rolled-back "
               f"transaction (µs, medians of {repeat})", mod.columns(r), mod.table_rows(r),
               console=output.out)
        render("client side: one statement and its commit (ms, medians)", mod.CLIENT_COLUMNS,
               mod.client_rows(r), console=output.out)

    _emit(results, as_json, show)
    broken = [name for name, entry in results["workloads"].items() if entry["violations"]]
    if broken:
        # The figures of a guard that broke its guarantees measure nothing.
        say(f"error: violations() found rows after {', '.join(broken)}", to_stderr=True)
        sys.exit(1)


COMMANDS = [bench]
