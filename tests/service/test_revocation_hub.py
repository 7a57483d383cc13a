"""The watcher hub in-process: bounded queues, drops that never block the publisher, the
snapshot/queue hand-over without duplicates, the cap and shutdown (docs/revocation.md)."""

from __future__ import annotations

import threading
import time

import pytest

from evidenceos.core.sth import SignedTreeHead
from evidenceos.errors import ResourceExhausted, Unavailable
from evidenceos.service.revocation import SignedFeed, Subscription, WatcherHub, WatchSettings
from evidenceos.store.revocations import FeedEntry

HEAD = SignedTreeHead(1, bytes(32), bytes(64), bytes(32))


def message(first: int, last: int) -> SignedFeed:
    entries = tuple(
        FeedEntry(seq, 0, "revoked", bytes(32), bytes([seq]) * 32, 1, "r")
        for seq in range(first, last + 1)
    )
    return SignedFeed(entries, HEAD, bytes(64), bytes(32), last)


def subscribe(hub: WatcherHub, snapshot_last: int) -> Subscription:
    return Subscription(
        hub,
        hub.add(),
        message(1, snapshot_last)
        if snapshot_last
        else SignedFeed((), HEAD, bytes(64), bytes(32), 0),
    )


def test_messages_already_in_the_snapshot_are_skipped() -> None:
    hub = WatcherHub(WatchSettings(buffer=8, max_watchers=4))
    watcher = hub.add()
    hub.publish(message(3, 3))  # committed before the snapshot was read
    sub = Subscription(hub, watcher, message(1, 3))
    hub.publish(message(4, 5))
    assert sub.next(0.01) is None  # seq 3: already delivered in the snapshot
    got = sub.next(0.01)
    assert got is not None
    assert [e.feed_seq for e in got.entries] == [4, 5]
    assert sub.next(0.01) is None


def test_a_full_buffer_drops_only_that_watcher_and_never_blocks() -> None:
    hub = WatcherHub(WatchSettings(buffer=2, max_watchers=4))
    slow = subscribe(hub, 0)
    fast = subscribe(hub, 0)
    cancelled = threading.Event()
    slow.on_end(cancelled.set)
    started = time.monotonic()
    for seq in range(1, 6):
        hub.publish(message(seq, seq))
        assert fast.next(0.01) is not None
    assert time.monotonic() - started < 1.0
    assert len(hub) == 1 and hub.dropped_total == 1
    with pytest.raises(ResourceExhausted, match="revocation watcher dropped"):
        slow.next(0.01)
    fast.close()
    assert len(hub) == 0


def test_the_cap_and_shutdown() -> None:
    hub = WatcherHub(WatchSettings(buffer=4, max_watchers=1))
    sub = subscribe(hub, 0)
    with pytest.raises(ResourceExhausted, match="too many revocation watchers"):
        hub.add()
    blocked: list[BaseException] = []

    def wait() -> None:
        try:
            while True:
                sub.next(5.0)
        except Unavailable as exc:
            blocked.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    hub.close()
    thread.join(2)
    assert not thread.is_alive() and blocked
    with pytest.raises(Unavailable):
        hub.add()


def test_settings_from_env() -> None:
    assert WatchSettings.from_env({}) == WatchSettings(64, 16)
    env = {"EVIDENCEOS_REVOCATION_WATCH_BUFFER": "3", "EVIDENCEOS_REVOCATION_WATCHERS_MAX": "7"}
    assert WatchSettings.from_env(env) == WatchSettings(3, 7)
