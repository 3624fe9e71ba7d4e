#!/usr/bin/env bash
# Make sure the servers that the registry tests start are installed:
#   - PostgreSQL's initdb and pg_ctl (Debian's postgresql package; apt-get installs it when run as
#     root, as CI does on a fresh machine);
#   - moto's standalone S3 server (the dev dependency moto[server], installed in .venv).
# The tests start and stop their own servers on free loopback ports, in temporary folders
# (tests/registry/_reg_services.py): nothing here starts a server or touches a system cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

find_initdb() {
    command -v initdb 2>/dev/null && return 0
    ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(find_initdb)" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL is not installed and this is not root: run 'sudo apt-get install -y" \
             "postgresql' (the registry tests need initdb and pg_ctl)" >&2
        exit 1
    fi
    echo "installing PostgreSQL (Debian package 'postgresql') for the registry tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
initdb_path="$(find_initdb)"
if [ -z "$initdb_path" ]; then
    echo "PostgreSQL was installed but initdb is still missing (looked on PATH and under" \
         "/usr/lib/postgresql/*/bin)" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: the tests run the server as the 'postgres' user.
    id postgres >/dev/null 2>&1 || {
        echo "running as root, but there is no 'postgres' user to run the test server as" >&2
        exit 1
    }
    command -v runuser >/dev/null || { echo "runuser (util-linux) is missing" >&2; exit 1; }
fi
if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import moto.server" 2>/dev/null; then
    echo "moto's S3 server is missing from .venv: run 'make venv' (dev dependency moto[server])" >&2
    exit 1
fi
echo "registry test services: PostgreSQL $("$initdb_path" --version | awk '{print $3}')" \
     "($initdb_path), moto S3 server in .venv"
