"""RPCs of revocation (spec 20 §3.16-3.18): RevokeClaim, GetRevocationFeed, WatchRevocations.

Translation only. GetRevocationFeedResponse has no field for the tree head its signature covers,
so that head travels in trailing metadata (docs/revocation.md); WatchRevocations carries it in
``signed_tree_head``. A watcher may resume with request metadata ``x-evidenceos-feed-after: N``
(its first message then holds only entries N+1…).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import grpc

from evidenceos.core.sth import SignedTreeHead
from evidenceos.errors import EvidenceOSError, InvalidArgument
from evidenceos.rpc.errors import abort_with, handle_errors
from evidenceos.rpc.identity import caller_from_context, metadata_value
from evidenceos.rpc.servicer_claims import idempotency_key
from evidenceos.rpc.services import Services
from evidenceos.service.revocation import REVOKE_V2_METHOD, SignedFeed

FEED_AFTER_HEADER = "x-evidenceos-feed-after"
HEAD_SIZE_HEADER = "x-evidenceos-feed-tree-size"
HEAD_ROOT_HEADER = "x-evidenceos-feed-root-hash"
HEAD_SIGNATURE_HEADER = "x-evidenceos-feed-sth-signature"
FEED_LAST_SEQ_HEADER = "x-evidenceos-feed-last-seq"
WATCH_POLL_S = 1.0

log = logging.getLogger("evidenceos.rpc")


def feed_after(context: grpc.ServicerContext) -> int:
    raw = metadata_value(context, FEED_AFTER_HEADER)
    if raw is None or not raw.strip():
        return 0
    value = raw.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise InvalidArgument(f"{FEED_AFTER_HEADER} must be a non-negative integer")
    return int(value)


def head_metadata(feed: SignedFeed) -> tuple[tuple[str, str], ...]:
    """The head a feed's signature covers, as trailing metadata (lowercase hex)."""
    head = feed.head
    return (
        (HEAD_SIZE_HEADER, str(head.tree_size)),
        (HEAD_ROOT_HEADER, head.root_hash.hex()),
        (HEAD_SIGNATURE_HEADER, head.signature.hex()),
        (FEED_LAST_SEQ_HEADER, str(feed.last_seq)),
    )


class RevocationRpc:
    pb: ModuleType
    services: Services

    def _entries(self, feed: SignedFeed) -> list[Any]:
        return [
            self.pb.RevocationEntry(
                claim_id=e.capsule_hash, timestamp_unix=e.timestamp_unix, reason=e.reason
            )
            for e in feed.entries
        ]

    def _head(self, head: SignedTreeHead) -> Any:
        return self.pb.SignedTreeHead(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            signature=head.signature,
            key_id=head.key_id,
        )

    def _watch_message(self, feed: SignedFeed) -> Any:
        return self.pb.WatchRevocationsResponse(
            entries=self._entries(feed),
            signature=feed.signature,
            signed_tree_head=self._head(feed.head),
            key_id=feed.key_id,
        )

    @handle_errors
    def RevokeClaim(self, request: Any, context: grpc.ServicerContext) -> Any:
        caller = caller_from_context(context)
        key = idempotency_key(context, caller.principal_id, REVOKE_V2_METHOD, request)
        result = self.services.revocations.revoke_claim(
            caller, bytes(request.claim_id), request.reason, key
        )
        return self.pb.RevokeClaimResponse(
            state=result.state.value, timestamp_unix=result.timestamp_unix
        )

    @handle_errors
    def GetRevocationFeed(self, request: Any, context: grpc.ServicerContext) -> Any:
        feed = self.services.revocations.feed(feed_after(context))
        context.set_trailing_metadata(head_metadata(feed))
        return self.pb.GetRevocationFeedResponse(
            entries=self._entries(feed), signature=feed.signature, key_id=feed.key_id
        )

    def WatchRevocations(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """First the snapshot, then one message per committed revocation, until the client
        goes away, falls too far behind (RESOURCE_EXHAUSTED) or the daemon stops."""
        try:
            subscription = self.services.revocations.subscribe(feed_after(context))
        except EvidenceOSError as exc:
            abort_with(context, exc)
        context.add_callback(subscription.wake)
        subscription.on_end(context.cancel)
        try:
            yield self._watch_message(subscription.first)
            while context.is_active():
                message = subscription.next(WATCH_POLL_S)
                if message is not None:
                    yield self._watch_message(message)
        except EvidenceOSError as exc:
            abort_with(context, exc)
        except Exception:
            incident = uuid.uuid4().hex[:16]
            log.exception("unexpected error in WatchRevocations (incident %s)", incident)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
        finally:
            subscription.close()
