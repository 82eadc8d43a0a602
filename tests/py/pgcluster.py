"""A throwaway PostgreSQL cluster for the test run.

PostgreSQL refuses to run as root, so as root every server command runs as
the ``postgres`` OS user through ``runuser``; otherwise as the current user.
Binaries come from ``pg_config --bindir``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    # Durability is not what these tests are about; speed is what makes a
    # clone-per-test harness affordable.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "256MB",
    "max_locks_per_transaction": "256",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "lc_messages": "'C'",
}


def bindir() -> Path:
    try:
        found = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True,
                               text=True).stdout.strip()
        if (Path(found) / "postgres").exists():
            return Path(found)
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: run `make test`, "
                           "or install postgresql-15")
    return candidates[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    user = "postgres"
    host = "127.0.0.1"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bin = bindir()
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="consistency-guard-pg-"))
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=self.base)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", self.user, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")
        conf = self.datadir / "postgresql.conf"
        settings = {**SERVER_SETTINGS, "port": str(self.port),
                    "unix_socket_directories": f"'{self.base}'"}
        with conf.open("a") as f:
            for key, value in settings.items():
                f.write(f"{key} = {value}\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                  "start")

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

    def destroy(self) -> None:
        if self.datadir.exists() and self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def replica(self) -> Cluster:
        """A hot standby of this cluster, streaming from it: a base backup
        (pg_basebackup -R writes the standby.signal and primary_conninfo) on
        a port of its own, started."""
        standby = Cluster()
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
        import time

        import psycopg

        with psycopg.connect(primary.dsn(), autocommit=True) as p:
            target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
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
