"""A throwaway PostgreSQL server for the benchmarks and the multi-host torture.

Debian's PostgreSQL (`initdb`, `pg_ctl` under /usr/lib/postgresql/*/bin), default settings
(fsync on: the durability the figures are quoted at), run as an unprivileged user (initdb refuses
root: user `ewgci`, made when missing) on a socket in a temporary folder and a free port.
`.ci/postgres.sh` does the same for the tests.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found:
        raise SystemExit("PostgreSQL is not installed: apt-get install postgresql (Debian's package).")
    return Path(found[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="ewg-bench-pg."))
        self.port = _free_port()
        self.settings = settings or {}
        if os.getuid() == 0:
            self.user = "ewgci"
            with contextlib.suppress(KeyError):
                pwd.getpwnam(self.user)
                self._prefix = ["runuser", "-u", self.user, "--"]
            if not hasattr(self, "_prefix"):
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", self.user],
                    check=True,
                )
                self._prefix = ["runuser", "-u", self.user, "--"]
            shutil.chown(self.root, self.user)
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
            self._prefix = []
        os.chmod(self.root, 0o700)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@/postgres?host={self.root}&port={self.port}"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.root}&port={self.port}"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True)

    def start(self) -> Server:
        if not (self.root / "data").exists():
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.root / "data"),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
            )
        opts = f"-k {self.root} -p {self.port} -c listen_addresses='' -c max_connections=300"
        opts += "".join(f" -c {k}={v}" for k, v in self.settings.items())
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            opts,
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop("immediate")  # as a crash would: no checkpoint, recovery from the WAL at start
        self.start()

    def createdb(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def server(settings: dict[str, str] | None = None) -> Iterator[Server]:
    srv = Server(settings).start()
    try:
        yield srv
    finally:
        srv.close()
