"""Start and stop a real Milvus standalone server (``.venv/bin/milvus-server``) for tests and benches."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: The embedded etcd's peer port: fixed inside Milvus 2.3 (not configurable from the wrapper), so two
#: standalone servers cannot run on one machine at once.
ETCD_PEER_PORT = 2380


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class MilvusProcess:
    """One server in ``folder`` (binaries unpack into ``folder/base/bin`` on first start, 246 MB)."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def log_tail(self, n: int = 2000) -> str:
        text = ""
        for f in (self.folder / "server.log", self.folder / "base" / "logs" / "milvus-stdout.log"):
            if f.is_file():
                text += f"--- {f.name}\n" + f.read_text(errors="replace")[-n:]
        return text

    def start(self, wait_s: float = 600) -> None:
        """Start and wait until pymilvus gets an answer; RuntimeError with the reason otherwise."""
        exe = Path(sys.executable).parent / "milvus-server"
        if not exe.is_file():
            raise RuntimeError(f"{exe} is missing: the `milvus` package (pyproject dependency milvus==2.3.5) is "
                               "not installed in this venv; run `make test` or `.venv/bin/pip install -e .[dev]`")
        if _port_taken(ETCD_PEER_PORT):
            raise RuntimeError(f"127.0.0.1:{ETCD_PEER_PORT} is taken (another Milvus standalone server is running?): "
                               "its embedded etcd needs that port; stop the other server first")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._log = open(self.folder / "server.log", "wb")
        self.proc = subprocess.Popen([str(exe), "--data", str(self.folder / "base"), "--proxy-port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        from core.index.vectorstore_milvus import _pymilvus

        pm = _pymilvus()
        deadline = time.monotonic() + wait_s  # a hang guard, not a speed assertion
        probe = f"probe-{self.port}"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            log = (self.folder / "server.log").read_text(errors="replace")
            if "timeout" in log or "already stopped" in log:
                raise RuntimeError(f"milvus-server did not start:\n{self.log_tail()}")
            try:
                pm.connections.connect(probe, uri=self.uri, timeout=5)
                pm.utility.get_server_version(using=probe)
                pm.connections.disconnect(probe)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"milvus-server did not answer within {wait_s:.0f} s:\n{self.log_tail()}") from None
                time.sleep(1)

    def pids(self) -> list[int]:
        """The wrapper and the milvus binary (same process group), for memory figures."""
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:  # the wrapper's child (the milvus binary) is in the process group we created
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.proc = None
        if self._log:
            self._log.close()
