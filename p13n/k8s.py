"""Keeps ``k8s/base/rayservice.yaml``'s ``serveConfigV2`` identical to ``serving/serve_config.yaml``.

The Serve config file is the one source for ``p13n serve`` and the RayService; kustomize cannot
inline a file into a field of a custom resource, so ``make k8s`` (``python -m p13n.k8s``) copies it
between the markers, and a test fails when the copy is stale.

>>> embed("  serveConfigV2: |\\n    # serve-config:start x\\n    old: 1\\n    # serve-config:end\\n", "new: 2\\n")
'  serveConfigV2: |\\n    # serve-config:start x\\n    new: 2\\n    # serve-config:end\\n'
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from serving.runner import SERVE_CONFIG

__all__ = ["RAYSERVICE", "embed", "main"]

RAYSERVICE = Path(__file__).resolve().parent.parent / "k8s" / "base" / "rayservice.yaml"
_BLOCK = re.compile(r"^(?P<indent> *)# serve-config:start[^\n]*\n(?P<body>.*?)^(?P=indent)# serve-config:end", re.M | re.S)


def embed(manifest: str, serve_config: str) -> str:
    """``manifest`` with the lines between the serve-config markers replaced by ``serve_config``, indented."""
    match = _BLOCK.search(manifest)
    if match is None:
        raise ValueError("no `# serve-config:start` … `# serve-config:end` block in the RayService manifest")
    indent = match["indent"]
    body = "".join(f"{indent}{line}\n" if line.strip() else "\n" for line in serve_config.splitlines())
    return manifest[: match.start("body")] + body + manifest[match.end("body") :]


def main() -> int:
    current = RAYSERVICE.read_text()
    wanted = embed(current, SERVE_CONFIG.read_text())
    if wanted != current:
        RAYSERVICE.write_text(wanted)
        print(f"updated {RAYSERVICE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
