"""Generated code for package evidenceos.v1 (see scripts/gen_proto.py)."""
