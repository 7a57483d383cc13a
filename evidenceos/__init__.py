"""EvidenceOS: a verification daemon with a signed, append-only Merkle log."""

__version__ = "0.1.0"
