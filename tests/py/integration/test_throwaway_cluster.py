"""A throwaway cluster (the harness's, the demo's, the benchmarks') trusts
whoever connects, so only its own OS user and root may reach it: no TCP
port, a socket in a 0700 directory (orchestrator/pgcluster.py)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess

import psycopg
import pytest

from orchestrator.pgcluster import Cluster


def test_no_tcp_port_and_a_private_socket_directory(cluster: Cluster) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres connect_timeout=3")
    assert stat.S_IMODE(os.stat(cluster.host).st_mode) == 0o700
    with psycopg.connect(cluster.dsn()) as conn:  # the harness itself gets in
        assert conn.execute("SELECT current_setting('listen_addresses')").fetchone()[0] == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another OS user")
def test_another_local_user_cannot_log_in_as_the_superuser(cluster: Cluster) -> None:
    other = pwd.getpwnam("nobody").pw_name
    for host in ("127.0.0.1", cluster.host):
        where = f"host={host} port={cluster.port}"
        tried = subprocess.run(
            ["runuser", "-u", other, "--", str(cluster.bin / "psql"), "-XAtc",
             "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
             f"{where} user=postgres dbname=postgres connect_timeout=3"],
            capture_output=True, text=True, timeout=30, cwd="/")
        assert tried.returncode != 0 and tried.stdout == "", (where, tried)
