"""The refresh lock in Milvus: one refresh at a time across machines that share one Milvus server.

Why here: the data directory's flock (:mod:`core.index.lock`) is right on one machine, but bot
processes on several machines, each with its own copy of the data directory, never see each
other's flock. The Milvus server is the one thing they all share, so with the ``milvus`` store the
refresh holds a lock there too.

Milvus 2.3 has no compare-and-set on rows, but ``create_alias`` is refused when the alias already
exists (checked in the root coordinator, so it is an atomic test-and-set). The lock is therefore:

* **Acquire:** create a tiny empty collection of one's own (``<prefix>_refresh_<host>_<pid>_<hex>``;
  unique per attempt, because ``create_alias`` to the collection an alias already names succeeds),
  write the lease into its properties (host, pid, machine id, start, expiry), then create the alias
  ``<prefix>_refresh_lock`` on it. Whoever creates the alias holds the lock.
* **Lease:** the holder's heartbeat thread moves the expiry forward every ``ttl/6`` seconds
  (``set_properties``: one metadata write, no data, no index, nothing loaded). Another process
  refuses while the lease is fresh, naming the holder's pid and host.
* **A dead holder:** on another machine no kernel drops anything, so a lease past its expiry may be
  broken. On the holder's own machine (same host name and boot id) a holder pid that no longer
  runs is dead at once, so a SIGKILLed refresh does not block the next one for a whole TTL.
  Breaking is itself guarded by a test-and-set: the breaker first creates the alias
  ``<prefix>_refresh_lock_break_<hash of the dead holder's collection>``, so of several processes
  that saw the same stale lease only one goes on; it re-reads the lock, and only if the alias still
  names that stale lease does it drop the alias and create its own. A collection name is never
  reused, so once broken the alias never names that lease again and a late breaker's re-read fails.
  A breaker that dies between its guard and its take-over leaves the guard on its own collection,
  whose lease (written at creation, never renewed) goes stale in turn; the next breaker clears it.
  "The same machine" means the same host name, boot id and pid namespace (containers sharing one
  kernel and host name number their processes apart).
* **Release:** drop the alias (if it still names us), then the collection.

The race window that remains, honestly: breaking is "drop alias, create alias", two calls. If the
holder was not dead but stalled longer than the TTL (a frozen VM, a partition from Milvus, a clock
stepped forward by more than the TTL) it loses the lock while it still runs: its heartbeat notices
(``lost``) and logs it, and the refresh confirms the lease right before it publishes
(``core.index.lock.RefreshLock.confirm``: LockLostError, its build discarded), so the two overlap
only in work, unless the stall falls between that confirmation and the swap. Between a breaker's re-read and its ``drop_alias`` (milliseconds) a holder thought dead
could also release and a third process acquire, whose alias the breaker would then drop. Expiry
compares the holder's clock with the reader's: machines' clocks must agree to well within the TTL
(NTP does). Rebuilds publish by atomic alias/pointer switches, so an overlap costs a wasted
rebuild, never a half-built index for readers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import EchoVidsError
from core.index.vectorstore_milvus import _pymilvus, connect, drop_quietly, milvus_errors

log = logging.getLogger("echovids.index.lock")

#: Seconds a lease stays fresh without a heartbeat: long enough for a busy server or a loaded
#: machine to miss a few beats, short enough that a dead machine's lock clears in minutes.
LEASE_TTL_S = 120.0
#: Milvus 2.3.5's status codes (``merr``) for the answers a test-and-set expects.
ALIAS_NOT_FOUND = 1600
ALIAS_EXISTS = 1602
COLLECTION_NOT_FOUND = 100
RPC_TIMEOUT_S = 10.0
_PROPS = "echovids.lock."


def lock_alias(settings: Any) -> str:
    return f"{settings.milvus_prefix}_refresh_lock"


def _break_alias(settings: Any, collection: str) -> str:
    return f"{lock_alias(settings)}_break_{hashlib.sha1(collection.encode()).hexdigest()[:16]}"


def machine_id() -> str:
    """Where a pid means the same process, for the "is its holder still running" test: the host
    name, the kernel's boot id (a rebooted machine's pids are all new) and the pid namespace (two
    containers on one kernel, even with one host name, each number their own processes)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{socket.gethostname()}/{boot}/{pidns}"


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        return True
    return True


@dataclass(frozen=True)
class Lease:
    """What the lock alias names: the holder's collection and the lease in its properties."""

    collection: str
    host: str = ""
    pid: int | None = None
    machine: str = ""
    started: float | None = None
    #: Unix time after which the lease may be broken (None: the collection is gone, or unreadable).
    expires: float | None = None

    def stale(self, now: float, here: str | None = None) -> bool:
        """Past its expiry, its collection gone, or its holder dead on this very machine."""
        if self.expires is None or now > self.expires:
            return True
        here = machine_id() if here is None else here
        return bool(self.pid) and self.machine == here and not _pid_runs(int(self.pid))


class MilvusLockBusy(EchoVidsError):
    """A fresh lease is held by someone else (``lease`` names them)."""

    def __init__(self, lease: Lease):
        super().__init__(f"held by pid {lease.pid} on {lease.host}")
        self.lease = lease


def _rpc(pm, using: str, method: str, request, expected: tuple[int, ...] = ()) -> tuple[Any, int]:
    """One call straight on pymilvus's gRPC stub: (reply, status code), the codes in ``expected``
    returned rather than raised. Why not pymilvus's wrappers (``utility.create_alias``...): they
    retry on transport errors (``retry_on_rpc_failure``), and a create whose first reply was lost
    comes back as "alias already exists" — its own success read as someone else's lock; and they log
    every refusal at ERROR, where "already exists" or "not found" are the ordinary answers of a
    test-and-set. The stub is private to pymilvus, hence the exact pin (2.3.7) in pyproject.toml;
    tests/test_milvus_lock.py runs it against a real server, so an upgrade that moves it fails there."""
    from pymilvus.exceptions import MilvusException

    reply = getattr(pm.connections._fetch_handler(using)._stub, method)(request, timeout=RPC_TIMEOUT_S)
    status = getattr(reply, "status", reply)
    if status.code == 0 and status.error_code == 0:
        return reply, 0
    if status.code in expected:
        return reply, status.code
    raise MilvusException(status.code, status.reason, status.error_code)


def _alias_target(pm, using: str, alias: str) -> str | None:
    """The collection ``alias`` names (even one since dropped), or None when there is no alias."""
    from pymilvus.client.prepare import Prepare

    reply, code = _rpc(pm, using, "DescribeAlias", Prepare.describe_alias_request(alias), (ALIAS_NOT_FOUND,))
    return None if code else (reply.collection or None)


def read_lease(settings: Any, alias: str | None = None) -> Lease | None:
    """The lease the lock alias (or the guard ``alias``) names now, or None when nobody holds it."""
    from pymilvus.client.prepare import Prepare

    with milvus_errors("reading the refresh lock"):
        pm = _pymilvus()
        using = connect(settings)
        name = _alias_target(pm, using, alias or lock_alias(settings))
        if name is None:
            return None
        reply, code = _rpc(pm, using, "DescribeCollection", Prepare.describe_collection_request(name),
                           (COLLECTION_NOT_FOUND,))
        if code:
            return Lease(collection=name)  # a dangling alias: its holder's collection was dropped
        return _lease_from(name, {kv.key: kv.value for kv in reply.properties})


def _lease_from(name: str, props: dict[str, str]) -> Lease:
    def num(key: str) -> float | None:
        try:
            return float(props[_PROPS + key])
        except (KeyError, ValueError):
            return None

    pid = num("pid")
    return Lease(collection=name, host=props.get(_PROPS + "host", ""), pid=int(pid) if pid else None,
                 machine=props.get(_PROPS + "machine", ""), started=num("started"), expires=num("expires"))


class MilvusRefreshLock:
    """The lease-based lock described in the module docstring; :meth:`acquire`, then :meth:`release`.

    ``clock`` (Unix seconds) decides expiry, both the one written and the one judged, so tests
    move time instead of sleeping; with ``heartbeat=False`` no thread renews the lease and the
    caller calls :meth:`beat` (so a test decides when a beat happens). ``host`` and ``machine``
    default to this machine's; a test can pose as another machine to see the cross-machine path.
    """

    def __init__(self, settings: Any, *, clock: Callable[[], float] = time.time, ttl_s: float = LEASE_TTL_S,
                 host: str | None = None, machine: str | None = None, heartbeat: bool = True):
        self.settings = settings
        self.clock = clock
        self.ttl_s = float(ttl_s)
        self.host = host or socket.gethostname()
        self.machine = machine or machine_id()
        self.pid = os.getpid()
        self.collection: str | None = None
        #: The lease this acquisition broke (its holder was dead or silent past its expiry).
        self.broke: Lease | None = None
        #: Set by the heartbeat when the alias no longer names us (someone broke our lease).
        self.lost = threading.Event()
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- acquire -----------------------------------------------------------------------------------
    def acquire(self) -> MilvusRefreshLock:
        """Take the lock or raise :class:`MilvusLockBusy` naming the holder (MilvusStoreError when
        the server cannot be reached)."""
        with milvus_errors("taking the refresh lock"):
            pm = _pymilvus()
            using = connect(self.settings)
            self.collection = self._create_own(pm, using)
            try:
                for _attempt in range(3):  # retried only when the holder changed under us
                    if self._alias(pm, using, lock_alias(self.settings)):
                        break
                    lease = read_lease(self.settings)
                    if lease is None:
                        continue  # released between our try and our look
                    if not lease.stale(self.clock(), self.machine):
                        raise MilvusLockBusy(lease)
                    if self._take_over(pm, using, lease):
                        self.broke = lease
                        break
                else:
                    raise MilvusLockBusy(read_lease(self.settings) or Lease(collection="?"))
            except BaseException:
                self._drop_own()
                raise
        if self.heartbeat:
            self._beat = threading.Thread(target=self._heartbeat, name="echovids-refresh-lease", daemon=True)
            self._beat.start()
        return self

    def _create_own(self, pm, using: str) -> str:
        tag = re.sub(r"[^0-9A-Za-z]", "_", self.host)[:40]
        name = f"{self.settings.milvus_prefix}_refresh_{tag}_{self.pid}_{uuid.uuid4().hex[:8]}"
        fields = [pm.FieldSchema("id", pm.DataType.INT64, is_primary=True),
                  pm.FieldSchema("v", pm.DataType.FLOAT_VECTOR, dim=2)]  # 2.3 wants a vector field
        collection = pm.Collection(name, pm.CollectionSchema(fields, description="Echo-Vids refresh lock holder"),
                                   using=using)
        now = self.clock()
        collection.set_properties({_PROPS + "host": self.host, _PROPS + "pid": str(self.pid),
                                   _PROPS + "machine": self.machine, _PROPS + "started": repr(now),
                                   _PROPS + "expires": repr(now + self.ttl_s)})
        return name

    def _alias(self, pm, using: str, alias: str) -> bool:
        """The test-and-set: True when we created ``alias`` on our collection, False when it exists."""
        from pymilvus.client.prepare import Prepare

        _reply, code = _rpc(pm, using, "CreateAlias", Prepare.create_alias_request(self.collection, alias),
                            (ALIAS_EXISTS,))
        return code == 0

    def _take_over(self, pm, using: str, stale: Lease) -> bool:
        """Break ``stale`` if we are the one process allowed to (see the module docstring)."""
        guard = _break_alias(self.settings, stale.collection)
        if not self._alias(pm, using, guard):
            breaker = read_lease(self.settings, guard)
            if breaker is not None and not breaker.stale(self.clock(), self.machine):
                raise MilvusLockBusy(stale)  # another process is breaking this very lease now
            # a breaker died mid-way (its own lease, never renewed, is stale): clear its guard once
            pm.utility.drop_alias(guard, using=using)
            if breaker is not None:
                self._drop_logged(breaker.collection)
            if not self._alias(pm, using, guard):
                raise MilvusLockBusy(stale)
        try:
            again = read_lease(self.settings)
            if again is None or again.collection != stale.collection or not again.stale(self.clock(), self.machine):
                return False  # it changed hands meanwhile: look again
            pm.utility.drop_alias(lock_alias(self.settings), using=using)
            if not self._alias(pm, using, lock_alias(self.settings)):
                return False  # a plain acquire won the gap: look again (it will be fresh)
            log.warning("taking over the refresh lock left by pid %s on %s (the holder stopped or went silent)", stale.pid, stale.host)
            self._drop_logged(stale.collection)
            return True
        finally:
            try:
                pm.utility.drop_alias(guard, using=using)
            except Exception as err:  # noqa: BLE001 - a leftover guard names a lease that is gone
                log.warning("could not drop %s: %s", guard, err)

    # -- hold --------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        interval = self.ttl_s / 6
        while not self._stop.wait(interval):
            self.beat()

    def beat(self) -> bool:
        """Move our lease's expiry forward; False (and ``lost`` set) when the alias names someone else."""
        try:
            with milvus_errors("renewing the refresh lock"):
                pm = _pymilvus()
                using = connect(self.settings)
                if _alias_target(pm, using, lock_alias(self.settings)) != self.collection:
                    if not self.lost.is_set():
                        log.error("the refresh lock in Milvus was taken over while this refresh runs "
                                  "(its lease expired: was this process stalled?)")
                    self.lost.set()
                    return False
                pm.Collection(self.collection, using=using).set_properties(
                    {_PROPS + "expires": repr(self.clock() + self.ttl_s)})
                return True
        except EchoVidsError as err:  # Milvus unreachable for a moment: the next beat tries again
            log.warning("%s", err)
            return False

    # -- release -----------------------------------------------------------------------------------
    def release(self) -> None:
        """Drop the alias (when it still names us) and our collection; errors are logged, not
        raised (the refresh's own outcome is what matters; the lease then just expires)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.collection is None:
            return
        try:
            with milvus_errors("releasing the refresh lock"):
                pm = _pymilvus()
                using = connect(self.settings)
                if _alias_target(pm, using, lock_alias(self.settings)) == self.collection:
                    pm.utility.drop_alias(lock_alias(self.settings), using=using)
                self._drop_own()
        except EchoVidsError as err:
            log.warning("%s; its lease expires within %.0f s", err, self.ttl_s)

    def _drop_own(self) -> None:
        name, self.collection = self.collection, None
        if name:
            self._drop_logged(name)

    def _drop_logged(self, name: str) -> None:
        """Clean-up: a leftover empty lock collection harms nobody, so a failure is only logged."""
        if (err := drop_quietly(self.settings, name)) is not None:
            log.warning("could not drop %s: %s", name, err)

    def __enter__(self) -> MilvusRefreshLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(settings: Any, *, clock: Callable[[], float] = time.time) -> Lease | None:
    """The fresh lease of whoever runs a refresh against this Milvus prefix, or None (a stale
    lease counts as free: the next refresh breaks it)."""
    lease = read_lease(settings)
    return lease if lease is not None and not lease.stale(clock()) else None
