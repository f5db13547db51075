"""Real servers and programs for the audit tests: a private PostgreSQL server, headless Chromium, raw SQL access,
the stores earlier releases wrote.

``running_postgres()`` starts a throw-away PostgreSQL server (initdb into a fresh temporary directory, pg_ctl on a
free loopback port, trust authentication for loopback only) and removes it afterwards. Debian installs the server
binaries under /usr/lib/postgresql/<version>/bin/ (``tests/system_setup.sh`` installs them; ``make test`` runs it).
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` system user that the Debian
package creates. If the server truly cannot start, the tests that need it are skipped with the exact reason.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _postgres_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a private PostgreSQL server; yield its base connection string (``postgresql://imt@127.0.0.1:PORT``)."""
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL server not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH "
                    "(run `bash tests/system_setup.sh`; `make test` does)")
    as_user: dict[str, object] = {}
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as "
                        "(PostgreSQL refuses to run as root)")
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid}
    root = Path(tempfile.mkdtemp(prefix="imt-cds-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()
    started = False
    try:
        def run(*args: str) -> None:
            result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=root, **as_user)
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                server_log = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
                pytest.skip(f"PostgreSQL server could not start: {Path(args[0]).name} exited {result.returncode}: "
                            + " | ".join(detail + server_log))

        run(str(binaries / "initdb"), "-D", str(data), "-U", "imt", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        started = True
        yield f"postgresql://imt@127.0.0.1:{port}"
    finally:
        if started:
            subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60, cwd=root, **as_user)  # type: ignore[call-overload]
        shutil.rmtree(root, ignore_errors=True)


_database_numbers = itertools.count(1)


def new_database(server: str) -> str:
    """A fresh, empty database on the server; returns its connection string."""
    import psycopg

    name = f"audit_{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


# --- raw access, as a tamperer with the database in hand would have ----------------------------------------------


def raw_sql(target: str | Path, *statements: str) -> list[list[tuple]]:
    """Run SQL statements directly on a store (no imt-cds code involved); return each one's rows."""
    results: list[list[tuple]] = []
    if str(target).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(target), autocommit=True) as connection:
            for statement in statements:
                cursor = connection.execute(statement)
                results.append(cursor.fetchall() if cursor.description else [])
        return results
    connection = sqlite3.connect(target, isolation_level=None)
    try:
        for statement in statements:
            results.append(connection.execute(statement).fetchall())
    finally:
        connection.close()
    return results


def disable_append_only(target: str | Path) -> None:
    """What a tamperer does first: remove the triggers that refuse UPDATE and DELETE."""
    if str(target).startswith("postgresql://"):
        raw_sql(target, *(f"ALTER TABLE {t} DISABLE TRIGGER USER"
                          for t in ("audit_records", "audit_blobs", "audit_rulebooks", "audit_rulebook_files")))
        return
    names = [row[0] for row in raw_sql(target, "SELECT name FROM sqlite_master WHERE type = 'trigger'")[0]]
    raw_sql(target, *(f"DROP TRIGGER {name}" for name in names))


# --- Chromium -----------------------------------------------------------------------------------------------------


def chromium_screenshot(html: Path, png: Path, width: int, height: int) -> None:
    """Render a local HTML file in real headless Chromium (Debian's package) to a PNG of width x height."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("Chromium is not installed (run `bash tests/system_setup.sh`; `make test` does)")
    with tempfile.TemporaryDirectory(prefix="imt-cds-chromium-") as profile:
        result = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={width},{height}", html.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not png.exists():
        raise AssertionError(f"Chromium failed ({result.returncode}): {result.stderr[-2000:]}")


def recorded_trail(target: str | Path, rulebook, patients) -> list:  # type: ignore[no-untyped-def]
    """Record the evaluations of ``patients`` in the store at ``target``, check the chain, then drop the append-only
    triggers so that a test can tamper with it; return the records as recorded."""
    from imt_cds import Engine
    from imt_cds.audit import open_store

    with open_store(target) as store:
        engine = Engine(rulebook, audit=store)
        for patient in patients:
            engine.evaluate(patient)
        records = store.records()
        assert store.verify().ok
    disable_append_only(target)
    return records


def verify_store(target: str | Path, **options):  # type: ignore[no-untyped-def]
    """``verify`` of the existing store at ``target`` (never creating one)."""
    from imt_cds.audit import open_store

    with open_store(target, create=False) as store:
        return store.verify(**options)


_LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def hold_sqlite_write_lock(path: str | Path) -> subprocess.Popen[bytes]:
    """Another process holding the SQLite write lock of ``path`` (BEGIN IMMEDIATE) from when this returns until its
    standard input is closed."""
    import sys

    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


def unpack_release_store(packed: Path, folder: Path) -> Path:
    """A writable copy of a release's audit store (``fixtures/audit-<version>/store.sqlite.gz``) in ``folder``."""
    path = folder / "store.sqlite"
    with gzip.open(packed) as source, path.open("wb") as copy:
        shutil.copyfileobj(source, copy)
    return path
