#!/usr/bin/env bash
# Makes sure what the test suite needs from the system is installed: the
# PostgreSQL server, pgTAP, plpgsql_check, python3-venv, openssl (the SMTPS
# test's certificate) and, when the distribution has them, a real Alertmanager,
# redis-server (`consistency bench circuit` compares pybreaker with its Redis
# storage when it is there), promtool (package prometheus: the alert rules'
# tests) and Chromium with its driver (the dashboard's browser test).
# Installs with apt-get when running as root on Debian/Ubuntu; otherwise says
# exactly what is missing and exits non-zero.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
required=(postgresql-"$PG_MAJOR" postgresql-"$PG_MAJOR"-pgtap postgresql-"$PG_MAJOR"-plpgsql-check
          python3-venv openssl util-linux)

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
command -v openssl >/dev/null 2>&1 || missing+=("openssl")
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("python3-venv")
want_optional=()
command -v prometheus-alertmanager >/dev/null 2>&1 || want_optional+=(prometheus-alertmanager)
[ -x /usr/bin/redis-server ] || want_optional+=(redis-server)
command -v promtool >/dev/null 2>&1 || want_optional+=(prometheus)
command -v chromium >/dev/null 2>&1 || want_optional+=(chromium)
command -v chromedriver >/dev/null 2>&1 || want_optional+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ] && { [ ${#want_optional[@]} -eq 0 ] || [ "$(id -u)" -ne 0 ]; }; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]} ${want_optional[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Optional: the one test that needs it skips, with its reason, without it.
    if [ ${#want_optional[@]} -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${want_optional[@]}" >/dev/null 2>&1 \
            || echo "note: ${want_optional[*]} not installed; its test will be skipped" >&2
    fi
    # Debian's packages may start services (a default cluster, alertmanager);
    # the tests start their own, so stop those to keep ports and memory free.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster "$PG_MAJOR" main stop >/dev/null 2>&1 || true
    fi
    pkill -x prometheus-alertmanager >/dev/null 2>&1 || true
    exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "error: missing system packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
