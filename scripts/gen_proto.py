"""Generate Python code from proto/ (coordinator/ into agent/_proto, sim/ into sim/_proto), or check
that the committed code is current.

    python scripts/gen_proto.py           # regenerate
    python scripts/gen_proto.py --check   # exit 1 and list files when the committed code drifted

protoc writes imports as ``from coordinator.v1 import x_pb2``; they are rewritten to the package
path ``agent._proto.coordinator.v1`` so the generated modules live inside their package.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
#: proto package root -> the Python package its generated code lives in
TARGETS = {"coordinator": "agent._proto", "sim": "sim._proto"}


def generate_all(base: Path) -> list[Path]:
    """Generate every target under ``base`` (the project root, or a scratch copy of it)."""
    written = []
    for root, package in TARGETS.items():
        written += generate(root, base / package.replace(".", "/"), package)
    return written


def generate(root: str, out: Path, package: str) -> list[Path]:
    from grpc_tools import protoc  # dev dependency only

    sources = sorted((PROTO_ROOT / root).rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(s.relative_to(PROTO_ROOT)) for s in sources],
    ]
    out.mkdir(parents=True, exist_ok=True)
    import os

    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    written = []
    for path in sorted(p for p in out.rglob("*.py*") if p.suffix in {".py", ".pyi"}):
        text = path.read_text()
        path.write_text(re.sub(rf"^from {root}\.(v\d+) import ", rf"from {package}.{root}.\1 import ", text,
                               flags=re.MULTILINE))
        written.append(path)
    for folder in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    opts = parser.parse_args()
    if not opts.check:
        generate_all(ROOT)
        print("generated " + ", ".join(TARGETS.values()))
        return 0
    drift = []
    with tempfile.TemporaryDirectory() as tmp:
        for root, package in TARGETS.items():
            out = ROOT / package.replace(".", "/")
            fresh = Path(tmp) / package.replace(".", "/")
            generate(root, fresh, package)
            for new in sorted(p for p in fresh.rglob("*") if p.is_file()):
                old = out / new.relative_to(fresh)
                if not old.exists() or not filecmp.cmp(new, old, shallow=False):
                    drift.append(str(old.relative_to(ROOT)))
            for old in sorted(p for p in out.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                if not (fresh / old.relative_to(out)).exists():
                    drift.append(f"{old.relative_to(ROOT)} (stale)")
    if drift:
        print("generated code is out of date; run: python scripts/gen_proto.py", file=sys.stderr)
        for item in drift:
            print(f"  {item}", file=sys.stderr)
        return 1
    print("generated code is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
