"""RevokeClaim, the signed revocation feed and its watchers (spec 20 §3.16-3.18, spec 40 §3.3,
§5, DESIGN §3).

A revocation commits in one transaction: the ``kind: "revocation"`` log leaf, the claim
REVOKED, every descendant capsule's claim TAINTED (breadth-first over dependency edges), the
feed entries and the idempotency record. Only then is anything published.

The feed is signed with the spec 40 §3.3 snapshot digest over its entries **and** the signed
tree head read in the same snapshot, by the key that signed that head. That head travels with
the feed (the ``signed_tree_head`` field of WatchRevocations, trailing metadata of
GetRevocationFeed), so a client holding only the public key can verify both signatures
(docs/revocation.md).

Watchers get a full snapshot first, then one message per committed revocation. Each has its own
bounded queue; a publisher never waits for a watcher: a full queue drops that watcher, whose
stream then ends with RESOURCE_EXHAUSTED and who reconnects for a fresh snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evidenceos.core.auth import CallerIdentity
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.credit import parse_env_positive_u64
from evidenceos.core.sth import SignedTreeHead, compute_revocation_snapshot_digest
from evidenceos.errors import (
    FailedPrecondition,
    InvalidArgument,
    LogIntegrityError,
    ResourceExhausted,
    Unavailable,
)
from evidenceos.service.claims import (
    ClaimService,
    IdempotencyKey,
    parse_claim_id,
    verify_claim_access,
)
from evidenceos.store import claims as claims_table
from evidenceos.store import log as log_table
from evidenceos.store import revocations as revocations_table
from evidenceos.store.db import Connection
from evidenceos.store.failpoints import failpoint
from evidenceos.store.keys import Keyring
from evidenceos.store.revocations import REVOKED, TAINTED, FeedEntry

REVOKE_V2_METHOD = "/evidenceos.v2.EvidenceOS/RevokeClaimV2"
MAX_REASON_BYTES = 256
TAINT_REASON_PREFIX = "tainted:"

log = logging.getLogger("evidenceos.revocation")


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Per-watcher buffer and the number of concurrent watchers (each holds an RPC thread)."""

    buffer: int = 64
    max_watchers: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WatchSettings:
        """``EVIDENCEOS_REVOCATION_WATCH_BUFFER``, ``EVIDENCEOS_REVOCATION_WATCHERS_MAX``."""
        d = cls()
        return cls(
            buffer=parse_env_positive_u64(
                env, "EVIDENCEOS_REVOCATION_WATCH_BUFFER", default=d.buffer
            ),
            max_watchers=parse_env_positive_u64(
                env, "EVIDENCEOS_REVOCATION_WATCHERS_MAX", default=d.max_watchers
            ),
        )


@dataclass(frozen=True, slots=True)
class RevokeResult:
    state: ClaimState
    timestamp_unix: int

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.name, "timestamp_unix": self.timestamp_unix}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RevokeResult:
        return cls(ClaimState[d["state"]], int(d["timestamp_unix"]))


@dataclass(frozen=True, slots=True)
class SignedFeed:
    """Feed entries with the head they were read with and the snapshot signature.

    ``signature = Ed25519(key_id's key, compute_revocation_snapshot_digest(entries, head))``;
    ``key_id == head.key_id``. ``last_seq`` is the feed position of the last entry (or of the
    whole feed when ``entries`` is empty)."""

    entries: tuple[FeedEntry, ...]
    head: SignedTreeHead
    signature: bytes
    key_id: bytes
    last_seq: int


def snapshot_digest(entries: Sequence[FeedEntry], head: SignedTreeHead) -> bytes:
    return compute_revocation_snapshot_digest(
        [(e.capsule_hash, e.timestamp_unix, e.reason) for e in entries],
        head.tree_size,
        head.root_hash,
        head.key_id,
    )


# -- watchers ---------------------------------------------------------------------------------

_WAKE = object()


#: After a watcher is dropped (or the daemon stops), its stream gets this long to end on its
#: own with a clear status; a client that reads nothing at all keeps the sending thread blocked
#: on flow control, so its RPC is then cancelled to free the thread.
CANCEL_GRACE_S = 5.0


@dataclass(eq=False)
class _Watcher:
    inbox: queue.Queue[object]
    dropped: bool = False
    closed: bool = False
    cancel_rpc: Callable[[], None] | None = None

    def end(self) -> None:
        """Wake the stream, and cancel its RPC if it is still running after the grace."""
        _wake(self)
        if self.cancel_rpc is not None:
            timer = threading.Timer(CANCEL_GRACE_S, self.cancel_rpc)
            timer.daemon = True
            timer.start()


class WatcherHub:
    """Fan-out of committed revocations; a publisher never blocks on a watcher."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._watchers: set[_Watcher] = set()
        self._closed = False
        self.dropped_total = 0

    def add(self) -> _Watcher:
        with self._lock:
            if self._closed:
                raise Unavailable("daemon is shutting down; reconnect to another daemon")
            if len(self._watchers) >= self.settings.max_watchers:
                raise ResourceExhausted(
                    f"too many revocation watchers ({self.settings.max_watchers}); retry later "
                    "or poll GetRevocationFeed"
                )
            watcher = _Watcher(queue.Queue(maxsize=self.settings.buffer))
            self._watchers.add(watcher)
            return watcher

    def remove(self, watcher: _Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    def __len__(self) -> int:
        with self._lock:
            return len(self._watchers)

    def publish(self, message: SignedFeed) -> None:
        dropped: list[_Watcher] = []
        with self._lock:
            for watcher in list(self._watchers):
                try:
                    watcher.inbox.put_nowait(message)
                except queue.Full:
                    watcher.dropped = True
                    self._watchers.discard(watcher)
                    self.dropped_total += 1
                    dropped.append(watcher)
        for watcher in dropped:
            log.warning(
                "revocation watcher dropped: %d messages buffered",
                self.settings.buffer,
                extra={"event": "revocation_watcher_dropped"},
            )
            watcher.end()

    def close(self) -> None:
        """Shutdown: every watcher's stream ends (UNAVAILABLE) and no new one starts."""
        with self._lock:
            self._closed = True
            watchers = list(self._watchers)
            self._watchers.clear()
        for watcher in watchers:
            watcher.closed = True
            watcher.end()


def _wake(watcher: _Watcher) -> None:
    with contextlib.suppress(queue.Full):  # a full inbox is read without blocking anyway
        watcher.inbox.put_nowait(_WAKE)


@dataclass(eq=False)
class Subscription:
    """One watcher: ``first`` (the snapshot), then :meth:`next` for each later revocation."""

    hub: WatcherHub
    watcher: _Watcher
    first: SignedFeed
    _delivered: int = field(default=0)

    def __post_init__(self) -> None:
        self._delivered = self.first.last_seq

    def next(self, timeout: float) -> SignedFeed | None:
        """The next revocation, or None after ``timeout`` (or a wake-up) without one.

        Raises RESOURCE_EXHAUSTED when this watcher fell behind and was dropped, UNAVAILABLE
        when the daemon shuts down."""
        self._check()
        try:
            item = self.watcher.inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if not isinstance(item, SignedFeed):
            self._check()
            return None
        if item.last_seq <= self._delivered:
            return None  # already in the snapshot
        self._delivered = item.last_seq
        return item

    def _check(self) -> None:
        if self.watcher.dropped:
            raise ResourceExhausted(
                f"revocation watcher dropped: it fell {self.hub.settings.buffer} messages behind; "
                "reconnect — the first message of a new WatchRevocations holds every revocation "
                "(or only those after x-evidenceos-feed-after)"
            )
        if self.watcher.closed:
            raise Unavailable("daemon is shutting down; reconnect to resume the revocation feed")

    def wake(self) -> None:
        """Make a blocked :meth:`next` return (the RPC ended)."""
        _wake(self.watcher)

    def on_end(self, cancel_rpc: Callable[[], None]) -> None:
        """How to cancel this watcher's RPC if it does not end by itself once dropped."""
        self.watcher.cancel_rpc = cancel_rpc

    def close(self) -> None:
        self.hub.remove(self.watcher)


# -- the service ------------------------------------------------------------------------------


class RevocationService:
    def __init__(
        self,
        claims: ClaimService,
        keyring: Keyring,
        settings: WatchSettings | None = None,
    ) -> None:
        self.claims = claims
        self.store = claims.store
        self.keyring = keyring
        self.hub = WatcherHub(settings or WatchSettings())
        self._publish_lock = threading.Lock()
        with self.store.read() as conn:
            self._published_seq = revocations_table.last_feed_seq(conn)

    # -- RevokeClaim --------------------------------------------------------------------------

    def revoke_claim(
        self,
        caller: CallerIdentity,
        claim_id: bytes,
        reason: str,
        key: IdempotencyKey | None,
    ) -> RevokeResult:
        """RevokeClaim (spec 20 §3.16): durable before the reply, exactly once per request id."""
        svc = self.claims
        with svc.inflight(key):
            cached = svc.replayed(key)
            if cached is not None:
                return RevokeResult.from_json(cached)
            if not 1 <= len(reason.encode("utf-8")) <= MAX_REASON_BYTES:
                raise InvalidArgument("reason must be in [1,256]")
            parse_claim_id(claim_id)
            with self.store.read() as conn:
                claim = claims_table.get_claim(conn, claim_id)
            verify_claim_access(caller, claim)
            if claim.last_capsule_hash is None:
                raise FailedPrecondition("capsule hash unavailable")

            def write(conn: Connection) -> RevokeResult:
                result = self._revoke_in(conn, caller, claim_id, reason)
                svc.remember(conn, key, result.to_json())
                failpoint("before_commit_revoke_claim")
                return result

            result = self.store.write(write)
        failpoint("after_etl_append_revoke_claim")
        self.publish_committed()
        return result

    def _revoke_in(
        self, conn: Connection, caller: CallerIdentity, claim_id: bytes, reason: str
    ) -> RevokeResult:
        svc = self.claims
        current = claims_table.get_claim(conn, claim_id)
        capsule_hash = current.last_capsule_hash
        if capsule_hash is None:
            raise FailedPrecondition("capsule hash unavailable")
        now_ms = svc.clock()
        timestamp = now_ms // 1000
        index = log_table.tree_size(conn)
        svc.log.want_head()  # feed readers get a head that proves this revocation
        leaf = svc.log.append(
            conn,
            {
                "kind": "revocation",
                "capsule_hash_hex": capsule_hash.hex(),
                "reason": reason,
                "revoked_at_index": index,
                "claim_id_hex": claim_id.hex(),
                "timestamp_unix": timestamp,
            },
        )
        if leaf.leaf_index != index:
            raise LogIntegrityError(f"revocation leaf landed at {leaf.leaf_index}, not {index}")
        revocations_table.put_revocation(
            conn,
            leaf_index=index,
            claim_id=claim_id,
            capsule_hash=capsule_hash,
            reason=reason,
            timestamp_unix=timestamp,
            principal_id=caller.principal_id,
            now_ms=now_ms,
        )
        claims_table.put_claim(conn, current.with_state(ClaimState.REVOKED), now_ms)
        revocations_table.append_feed_entry(
            conn,
            revocation_leaf_index=index,
            entry_kind=REVOKED,
            claim_id=claim_id,
            capsule_hash=capsule_hash,
            timestamp_unix=timestamp,
            reason=reason,
        )
        taint_reason = TAINT_REASON_PREFIX + capsule_hash.hex()
        for descendant in revocations_table.descendant_capsules(conn, capsule_hash):
            for tainted in claims_table.claims_with_capsule(conn, descendant):
                if tainted.claim_id == claim_id:
                    continue
                claims_table.put_claim(conn, tainted.with_state(ClaimState.TAINTED), now_ms)
                revocations_table.append_feed_entry(
                    conn,
                    revocation_leaf_index=index,
                    entry_kind=TAINTED,
                    claim_id=tainted.claim_id,
                    capsule_hash=descendant,
                    timestamp_unix=timestamp,
                    reason=taint_reason,
                )
        return RevokeResult(ClaimState.REVOKED, timestamp)

    # -- the feed -----------------------------------------------------------------------------

    def _sign(
        self, entries: Sequence[FeedEntry], head: SignedTreeHead, last_seq: int
    ) -> SignedFeed:
        key_id = bytes(head.key_id)
        private = self.keyring.private_keys.get(key_id)  # type: ignore[call-overload]
        if private is None:
            raise LogIntegrityError(
                f"the latest signed tree head names key {key_id.hex()}, which is not loaded"
            )
        signature = private.sign(snapshot_digest(entries, head))
        return SignedFeed(tuple(entries), head, signature, key_id, last_seq)

    def _read(self, after_seq: int) -> tuple[list[FeedEntry], SignedTreeHead, int]:
        with self.store.read() as conn:
            entries = revocations_table.feed_entries(conn, after_seq)
            last = revocations_table.last_feed_seq(conn)
            head = log_table.latest_head(conn)
        if head is None:
            raise LogIntegrityError("no signed tree head stored; the log was not started")
        return entries, head, last

    def feed(self, after_seq: int = 0) -> SignedFeed:
        """GetRevocationFeed: every entry (after ``after_seq``) and the latest head, read in one
        snapshot, signed together."""
        entries, head, last = self._read(self._check_after(after_seq))
        return self._sign(entries, head, last)

    def _check_after(self, after_seq: int) -> int:
        if after_seq < 0:
            raise InvalidArgument("feed position must be >= 0")
        return after_seq

    def subscribe(self, after_seq: int = 0) -> Subscription:
        """WatchRevocations: register first, then read the snapshot, so that a revocation
        committed in between is delivered exactly once (the snapshot's ``last_seq`` filters
        the queue)."""
        watcher = self.hub.add()
        try:
            first = self.feed(after_seq)
            if after_seq > first.last_seq:
                raise InvalidArgument(
                    f"x-evidenceos-feed-after {after_seq} is beyond the feed ({first.last_seq} "
                    "entries)"
                )
        except BaseException:
            self.hub.remove(watcher)
            raise
        return Subscription(self.hub, watcher, first)

    def publish_committed(self) -> None:
        """Push every committed entry not yet published, one message per revocation, in feed
        order. Called after each RevokeClaim commit; never raises (the revocation is durable
        whatever happens here)."""
        try:
            with self._publish_lock:
                # No shortcut when nobody watches: a watcher registering right now must get
                # what commits next, in its snapshot or from here (duplicates are filtered).
                entries, head, _ = self._read(self._published_seq)
                groups: dict[int, list[FeedEntry]] = {}
                for entry in entries:
                    groups.setdefault(entry.revocation_leaf_index, []).append(entry)
                for group in groups.values():
                    message = self._sign(group, head, group[-1].feed_seq)
                    self.hub.publish(message)
                    self._published_seq = group[-1].feed_seq
        except Exception:
            log.exception("publishing revocations to watchers failed; watchers may reconnect")

    def close(self) -> None:
        self.hub.close()
