#!/usr/bin/env bash
# Makes sure the PostgreSQL server, pgTAP and plpgsql_check are installed.
# Installs them with apt-get when running as root on Debian/Ubuntu; otherwise
# says exactly what is missing and exits non-zero.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
packages=(postgresql-"$PG_MAJOR" postgresql-"$PG_MAJOR"-pgtap postgresql-"$PG_MAJOR"-plpgsql-check)

bindir=""
if command -v pg_config >/dev/null 2>&1; then
    bindir="$(pg_config --bindir)"
fi
[ -x "$bindir/postgres" ] || bindir="/usr/lib/postgresql/$PG_MAJOR/bin"
sharedir="/usr/share/postgresql/$PG_MAJOR"

missing=()
[ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] || missing+=("postgresql-$PG_MAJOR")
[ -f "$sharedir/extension/pgtap.control" ] || missing+=("postgresql-$PG_MAJOR-pgtap")
[ -f "$sharedir/extension/plpgsql_check.control" ] || missing+=("postgresql-$PG_MAJOR-plpgsql-check")
command -v runuser >/dev/null 2>&1 || missing+=("util-linux")

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    # Debian's postgresql package may create and start a default cluster; the
    # tests never use it, so leave it stopped to keep port 5432 and memory free.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster "$PG_MAJOR" main stop >/dev/null 2>&1 || true
    fi
    exit 0
fi

echo "error: missing system packages: ${missing[*]}" >&2
echo "install them with: sudo apt-get install ${packages[*]}" >&2
exit 1
