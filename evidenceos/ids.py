"""Distinct types for identifiers and hashes so signatures say what they take."""

from __future__ import annotations

from typing import NewType

ClaimId = NewType("ClaimId", bytes)
TopicId = NewType("TopicId", bytes)
KeyId = NewType("KeyId", bytes)
LeafHash = NewType("LeafHash", bytes)
RootHash = NewType("RootHash", bytes)
PrincipalId = NewType("PrincipalId", str)
Epoch = NewType("Epoch", int)
