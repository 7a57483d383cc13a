"""Probe detection as a use case: observe CreateClaimV2/ExecuteClaimV2, refuse, log (spec 30 §8).

The transport calls :meth:`ProbeService.observe_create` or :meth:`ProbeService.observe_execute`
after authentication and before the handler runs. THROTTLE refuses the request
(:class:`~evidenceos.core.probe.ProbeThrottled`, RESOURCE_EXHAUSTED with a retry hint); ESCALATE
lets it through; FREEZE refuses it (:class:`~evidenceos.core.probe.ProbeFrozen`,
PERMISSION_DENIED). ESCALATE and FREEZE append a ``probe_event`` leaf to the log in a
transaction of their own: the audit record of a refusal must survive the refusal (spec 30 §8's
port note; docs/decisions.md D-S12). So that a client cannot grow the log by a leaf per refused
request, at most one ``probe_event`` per (principal, operation, action) is written per window.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from evidenceos.core.probe import (
    ProbeConfig,
    ProbeDetector,
    ProbeFrozen,
    ProbeObservation,
    ProbeThrottled,
    ProbeVerdict,
)
from evidenceos.service.log_service import Clock, LogService, system_clock_ms
from evidenceos.store import claims as claims_table
from evidenceos.store.db import Store

log = logging.getLogger("evidenceos.probe")

CREATE_OPERATION = "CreateClaimV2"
EXECUTE_OPERATION = "ExecuteClaimV2"
_SEMANTIC_DOMAIN = b"evidenceos/probe/execute_semantic/v1"


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ProbeService:
    """One daemon-wide detector plus its log writes."""

    def __init__(
        self,
        store: Store,
        log_service: LogService,
        config: ProbeConfig | None = None,
        clock: Clock = system_clock_ms,
    ) -> None:
        self._store = store
        self._log = log_service
        self._detector = ProbeDetector(config)
        self._clock = clock
        self._logged: dict[tuple[str, str, ProbeVerdict], int] = {}
        self._logged_lock = threading.Lock()

    @property
    def config(self) -> ProbeConfig:
        return self._detector.config

    def observe_create(self, principal_id: str, topic_id: bytes, semantic: bytes) -> None:
        """A CreateClaimV2: ``semantic`` identifies what was asked, ``topic_id`` its topic."""
        self._observe(principal_id, CREATE_OPERATION, topic_id.hex(), semantic.hex())

    def observe_execute(self, principal_id: str, claim_id: bytes) -> None:
        """An ExecuteClaimV2 of ``claim_id``; an unknown claim is left to the handler."""
        with self._store.read() as conn:
            claim = claims_table.find_claim(conn, claim_id)
        if claim is None:
            return
        # The reference passes the PhysHIR hash; ours is client-supplied and optional, so the
        # committed module stands in for it (the same code is the same probe).
        program = claim.phys_hir_signature_hash or claim.wasm_sha256 or claim.claim_id
        semantic = hashlib.sha256(_SEMANTIC_DOMAIN + program).hexdigest()
        self._observe(principal_id, EXECUTE_OPERATION, claim.topic_id.hex(), semantic)

    def _observe(self, principal_id: str, operation: str, topic_hex: str, semantic: str) -> None:
        now = self._clock()
        observation = self._detector.observe(
            principal_id, operation, topic_hex, semantic, now_ms=now
        )
        verdict = observation.verdict
        if verdict is ProbeVerdict.CLEAN:
            return
        log.warning(
            "probe verdict %s",
            verdict.value,
            extra={
                "event": "probe_verdict",
                "verdict": verdict.value,
                "operation_id": operation,
                "principal_id": principal_id,
                "total": observation.snapshot.total,
                "unique_semantic": observation.snapshot.unique_semantic,
                "distinct_topics": observation.snapshot.distinct_topics,
            },
        )
        if verdict in (ProbeVerdict.ESCALATE, ProbeVerdict.FREEZE):
            self._record(principal_id, operation, topic_hex, observation, now)
        if verdict is ProbeVerdict.THROTTLE:
            raise ProbeThrottled(self.config.throttle_retry_after_ms)
        if verdict is ProbeVerdict.FREEZE:
            raise ProbeFrozen()

    def _record(
        self,
        principal_id: str,
        operation: str,
        topic_hex: str,
        observation: ProbeObservation,
        now_ms: int,
    ) -> None:
        verdict = observation.verdict
        key = (principal_id, operation, verdict)
        window = self.config.window_ms
        with self._logged_lock:
            last = self._logged.get(key)
            if last is not None and now_ms - last < window:
                return
            self._logged[key] = now_ms
            for stale in [k for k, at in self._logged.items() if now_ms - at >= window]:
                del self._logged[stale]
        entry: dict[str, Any] = {
            "kind": "probe_event",
            "operation_id": operation,
            "principal_hash": _sha256_hex(principal_id),
            "topic_hash": _sha256_hex(topic_hex),
            "reason": verdict.reason,
            "action": verdict.value,
        }
        try:
            self._log.append_entry(entry)
        except Exception:  # the verdict stands even if the audit write fails; say so loudly
            log.exception("could not append probe_event to the log")
