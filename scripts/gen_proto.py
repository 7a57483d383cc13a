"""Regenerate ``evidenceos/_proto`` from the ``.proto`` files under ``proto/``.

Usage::

    python scripts/gen_proto.py           # rewrite evidenceos/_proto in place (make proto)
    python scripts/gen_proto.py --check   # exit 1 if evidenceos/_proto is stale (make proto-check)

The code is produced by ``grpc_tools.protoc`` with the protobuf and gRPC Python
generators and the mypy-protobuf stub generators (``protoc-gen-mypy`` and
``protoc-gen-mypy_grpc``, looked up next to the running interpreter first, then on
``PATH``). Generated imports of ``evidenceos.v1`` / ``evidenceos.v2`` are rewritten to
``evidenceos._proto.v1`` / ``evidenceos._proto.v2``; the descriptor file names stay
``evidenceos/v1/evidenceos.proto`` and ``evidenceos/v2/evidenceos.proto``.

``evidenceos/_proto/__init__.py`` exports ``V2_PROTO_SHA256``, the SHA-256 of the exact
bytes of ``proto/evidenceos/v2/evidenceos.proto`` (``GetServerInfo.proto_hash``).

The output depends only on the proto files and the installed generator versions, so
running the script twice gives identical files.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "proto"
OUT_DIR = REPO_ROOT / "evidenceos" / "_proto"

VERSIONS = ("v1", "v2")
PROTO_FILES = tuple(f"evidenceos/{v}/evidenceos.proto" for v in VERSIONS)
V2_PROTO = PROTO_ROOT / "evidenceos" / "v2" / "evidenceos.proto"
PLUGINS = ("protoc-gen-mypy", "protoc-gen-mypy_grpc")

# Module references the generators emit for ``evidenceos/vN/evidenceos.proto``.
_MODULE_REF = re.compile(r"\bevidenceos\.(v[0-9]+)\.evidenceos_pb2\b")
_FROM_IMPORT = re.compile(r"\bfrom evidenceos\.(v[0-9]+) import\b")
_LEFTOVER = re.compile(r"^\s*(?:from|import) evidenceos\.v[0-9]+\b", re.MULTILINE)

_ROOT_INIT = '''\
"""Generated protobuf and gRPC modules for the EvidenceOS API.

Do not edit: produced by ``scripts/gen_proto.py`` from ``proto/``.
"""

from typing import Final

__all__ = ["V2_PROTO_SHA256"]

#: Hex SHA-256 of the exact bytes of proto/evidenceos/v2/evidenceos.proto
#: (reported as GetServerInfo.proto_hash).
V2_PROTO_SHA256: Final[str] = "{digest}"
'''

_VERSION_INIT = '''\
"""Generated code for package evidenceos.{version} (see scripts/gen_proto.py)."""
'''


class GenerationError(RuntimeError):
    """protoc failed or produced something this script does not expect."""


def _find_plugin(name: str) -> Path:
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise GenerationError(f"{name} not found (install mypy-protobuf in this environment)")
    return Path(found)


def _rewrite_imports(text: str) -> str:
    text = _MODULE_REF.sub(r"evidenceos._proto.\1.evidenceos_pb2", text)
    return _FROM_IMPORT.sub(r"from evidenceos._proto.\1 import", text)


def _run_protoc(raw_dir: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        *(f"--plugin={name}={_find_plugin(name)}" for name in PLUGINS),
        f"--python_out={raw_dir}",
        f"--grpc_python_out={raw_dir}",
        f"--mypy_out={raw_dir}",
        f"--mypy_grpc_out={raw_dir}",
        *(str(PROTO_ROOT / f) for f in PROTO_FILES),
    ]
    # Fixed argument list built from this repository's paths; no shell involved.
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise GenerationError(f"protoc failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")


def generate(dest: Path) -> None:
    """Write the complete contents of ``evidenceos/_proto`` into the empty directory ``dest``."""
    with tempfile.TemporaryDirectory(prefix="gen_proto_raw_") as tmp:
        raw_root = Path(tmp)
        _run_protoc(raw_root)
        for version in VERSIONS:
            raw = raw_root / "evidenceos" / version
            produced = sorted(p.name for p in raw.iterdir())
            expected = sorted(
                f"evidenceos_{suffix}"
                for suffix in ("pb2.py", "pb2.pyi", "pb2_grpc.py", "pb2_grpc.pyi")
            )
            if produced != expected:
                raise GenerationError(f"unexpected protoc output for {version}: {produced}")
            out = dest / version
            out.mkdir(parents=True)
            for name in produced:
                text = _rewrite_imports((raw / name).read_text(encoding="utf-8"))
                leftover = _LEFTOVER.search(text)
                if leftover is not None:
                    raise GenerationError(f"unrewritten import in {name}: {leftover.group(0)!r}")
                (out / name).write_text(text, encoding="utf-8", newline="\n")
            (out / "__init__.py").write_text(
                _VERSION_INIT.format(version=version), encoding="utf-8", newline="\n"
            )
    digest = hashlib.sha256(V2_PROTO.read_bytes()).hexdigest()
    (dest / "__init__.py").write_text(
        _ROOT_INIT.format(digest=digest), encoding="utf-8", newline="\n"
    )


def _tree(root: Path) -> dict[str, bytes]:
    """Relative path → bytes for every file under ``root``, ignoring bytecode caches."""
    if not root.is_dir():
        return {}
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or not path.is_file():
            continue
        files[rel.as_posix()] = path.read_bytes()
    return files


def _diff_summary(current: dict[str, bytes], wanted: dict[str, bytes]) -> list[str]:
    lines: list[str] = []
    shown = "evidenceos/_proto"
    for name in sorted(wanted.keys() - current.keys()):
        lines.append(f"missing:    {shown}/{name}")
    for name in sorted(current.keys() - wanted.keys()):
        lines.append(f"unexpected: {shown}/{name}")
    for name in sorted(current.keys() & wanted.keys()):
        if current[name] == wanted[name]:
            continue
        lines.append(f"differs:    {shown}/{name}")
        diff = list(
            difflib.unified_diff(
                current[name].decode("utf-8", "replace").splitlines(),
                wanted[name].decode("utf-8", "replace").splitlines(),
                fromfile=f"{shown}/{name} (checked in)",
                tofile=f"{shown}/{name} (from proto/)",
                lineterm="",
                n=1,
            )
        )
        limit = 40
        lines.extend(f"    {line[:160]}" for line in diff[:limit])
        if len(diff) > limit:
            lines.append(f"    ... {len(diff) - limit} more diff lines")
    return lines


def _sync(wanted: dict[str, bytes], dest: Path) -> list[str]:
    """Make ``dest`` hold exactly ``wanted``; return one line per file changed."""
    current = _tree(dest)
    changed: list[str] = []
    for name in sorted(current.keys() - wanted.keys()):
        (dest / name).unlink()
        changed.append(f"removed evidenceos/_proto/{name}")
    for name, data in sorted(wanted.items()):
        if current.get(name) == data:
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        changed.append(f"wrote evidenceos/_proto/{name}")
    for directory in sorted((p for p in dest.rglob("*") if p.is_dir()), reverse=True):
        if directory.name != "__pycache__" and not any(directory.iterdir()):
            directory.rmdir()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if evidenceos/_proto differs",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        fresh = Path(tmp) / "_proto"
        try:
            generate(fresh)
        except GenerationError as exc:
            sys.stderr.write(f"gen_proto: {exc}\n")
            return 2
        wanted = _tree(fresh)

    if args.check:
        summary = _diff_summary(_tree(OUT_DIR), wanted)
        if summary:
            sys.stderr.write(
                "gen_proto: evidenceos/_proto is out of date with proto/;"
                " run `make proto` (python scripts/gen_proto.py)\n"
            )
            sys.stderr.write("\n".join(summary) + "\n")
            return 1
        sys.stdout.write("gen_proto: evidenceos/_proto is up to date\n")
        return 0

    changed = _sync(wanted, OUT_DIR)
    for line in changed:
        sys.stdout.write(f"gen_proto: {line}\n")
    sys.stdout.write(f"gen_proto: {len(changed)} file(s) changed\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
