"""Generated code for package evidenceos.v2 (see scripts/gen_proto.py)."""
