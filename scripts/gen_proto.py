"""Generate Python code from proto/ into agent/_proto, or check that the committed code is current.

    python scripts/gen_proto.py           # regenerate
    python scripts/gen_proto.py --check   # exit 1 and list files when the committed code drifted

protoc writes imports as ``from coordinator.v1 import x_pb2``; they are rewritten to the package
path ``agent._proto.coordinator.v1`` so the generated modules live inside the agent package.
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
OUT = ROOT / "agent" / "_proto"
PACKAGE = "agent._proto"
_IMPORT = re.compile(r"^from coordinator\.(v\d+) import ", re.MULTILINE)


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency only

    sources = sorted(PROTO_ROOT.rglob("*.proto"))
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
    for path in sorted(out.rglob("*.py*")):
        text = path.read_text()
        path.write_text(_IMPORT.sub(rf"from {PACKAGE}.coordinator.\1 import ", text))
        written.append(path)
    for folder in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    opts = parser.parse_args()
    if not opts.check:
        generate(OUT)
        print(f"generated {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        drift = []
        for new in sorted(p for p in fresh.rglob("*") if p.is_file()):
            old = OUT / new.relative_to(fresh)
            if not old.exists() or not filecmp.cmp(new, old, shallow=False):
                drift.append(str(old.relative_to(ROOT)))
        for old in sorted(p for p in OUT.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            if not (fresh / old.relative_to(OUT)).exists():
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
