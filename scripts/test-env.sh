# Test environment for Gatehouse: source it (bash) from anywhere in the repository.
#
#   source scripts/test-env.sh && cargo test --workspace
#
# It makes sure that:
#   - PostgreSQL answers on 127.0.0.1:5432 with trust auth and has a database `test`: it starts
#     the machine's cluster if it is stopped, and installs `postgresql` from Debian's packages and
#     creates a trust-auth cluster if PostgreSQL is not installed at all;
#   - a Python venv at target/py holds tests/python/requirements.txt (pip runs only when that file
#     changed since the last install: its hash is kept in target/py/.requirements.sha256);
# then exports GATEHOUSE_TEST_DATABASE_URL and GATEHOUSE_TEST_PYTHON. Tests create their own
# randomly named databases and schemas from that URL and drop them. .ci/run sources this file too.
# It returns non-zero (and exports nothing) if either cannot be set up. Installing and starting
# PostgreSQL needs root (or sudo).

_gh_say() { printf 'test-env: %s\n' "$*" >&2; }

_gh_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_gh_pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

# Bounded wait: up to 30 s in 0.2 s steps, returning as soon as the server accepts connections.
_gh_pg_wait() {
    local _
    for _ in $(seq 150); do
        _gh_pg_ready && return 0
        sleep 0.2
    done
    return 1
}

_gh_pg_install() {
    local ver log
    command -v apt-get >/dev/null 2>&1 || { _gh_say "PostgreSQL is not installed and there is no apt-get"; return 1; }
    _gh_say "installing postgresql"
    log=$(mktemp)
    if ! { _gh_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           _gh_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
               --no-install-recommends postgresql; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    # Debian's package creates a `main` cluster with peer/scram auth; this one is brand new and
    # empty, so replace it with a throwaway cluster that trusts local connections.
    if [ -d "/etc/postgresql/$ver/main" ]; then
        _gh_as_root pg_dropcluster --stop "$ver" main || return 1
    fi
    _gh_as_root pg_createcluster "$ver" main -p 5432 -- --auth=trust >/dev/null || return 1
}

_gh_pg_setup() {
    local ver role
    if ! _gh_pg_ready; then
        if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
            _gh_pg_install || { _gh_say "could not install PostgreSQL"; return 1; }
        fi
        # The newest version that has a `main` cluster.
        ver=$(ls /etc/postgresql 2>/dev/null | sort -V | while read -r v; do
                  [ -f "/etc/postgresql/$v/main/postgresql.conf" ] && echo "$v"; done | tail -n 1)
        if [ -z "$ver" ]; then
            ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
            _gh_say "creating a PostgreSQL $ver cluster"
            _gh_as_root pg_createcluster "$ver" main -p 5432 -- --auth=trust >/dev/null || return 1
        fi
        if ! _gh_pg_ready; then
            _gh_say "starting PostgreSQL $ver/main"
            # Fails harmlessly if the cluster is already starting; the wait below decides.
            _gh_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
        fi
        _gh_pg_wait || { _gh_say "PostgreSQL does not accept connections on 127.0.0.1:5432"; return 1; }
    fi

    # The first role that trust auth lets in (postgres on Debian's clusters, root on some machines).
    for role in postgres root; do
        if psql -X -w -q -h 127.0.0.1 -p 5432 -U "$role" -d postgres -tAc 'select 1' >/dev/null 2>&1; then
            if [ "$(psql -X -w -h 127.0.0.1 -p 5432 -U "$role" -d postgres -tAc \
                    "select 1 from pg_database where datname = 'test'")" != 1 ]; then
                psql -X -w -q -h 127.0.0.1 -p 5432 -U "$role" -d postgres -c 'create database test' || return 1
            fi
            if psql -X -w -q -h 127.0.0.1 -p 5432 -U "$role" -d test -tAc 'select 1' >/dev/null 2>&1; then
                export GATEHOUSE_TEST_DATABASE_URL="postgres://$role@127.0.0.1:5432/test"
                return 0
            fi
        fi
    done
    _gh_say "no role (postgres, root) can connect to 127.0.0.1:5432 without a password"
    return 1
}

_gh_py_setup() {
    local venv=$1/target/py req=$1/tests/python/requirements.txt want have
    want=$(sha256sum "$req" | cut -d ' ' -f 1) || return 1
    if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        _gh_say "creating the Python venv target/py"
        rm -rf "$venv"
        "${GATEHOUSE_PYTHON_BASE:-python3}" -m venv "$venv" || return 1
    fi
    have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then
        _gh_say "installing tests/python/requirements.txt into target/py"
        rm -f "$venv/.requirements.sha256"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req" || return 1
        echo "$want" >"$venv/.requirements.sha256"
    fi
    export GATEHOUSE_TEST_PYTHON="$venv/bin/python"
}

_gh_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# In an `if`, so that a caller's `set -e` does not end the caller halfway through a step.
if _gh_pg_setup && _gh_py_setup "$_gh_root"; then _gh_status=0; else _gh_status=$?; fi
unset -f _gh_say _gh_as_root _gh_pg_ready _gh_pg_wait _gh_pg_install _gh_pg_setup _gh_py_setup
unset _gh_root
eval "unset _gh_status; return $_gh_status 2>/dev/null || exit $_gh_status"
