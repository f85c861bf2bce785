"""The Helm chart's copies of the API in crds/, and the helm binary. Pure apart from file I/O.

The chart (charts/modelgrid-operator) carries the CRDs and the shipped TierPolicies as templates,
so that helm upgrades them with the operator. They are generated from crds/, the one source:
`python -m modelgrid_sandbox.chart` rewrites them, and tests/unit/test_chart.py fails when they
drift. A CRD copy differs from its source only by the `helm.sh/resource-policy: keep`
annotation (value `crds.keep`); a policy copy only by the hook annotations that create it once
its CRD is served (a TierPolicy cannot be in the same release manifest as its CRD: helm maps
every kind of the manifest before it creates anything).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from modelgrid_sandbox.controlplane import REPO

CHART = REPO / "charts" / "modelgrid-operator"
CRDS = REPO / "crds"

#: source in crds/ -> the chart's copy
CRD_COPIES = {
    CRDS / "modelgrid.firmus.ai_modelqualifications.yaml": (
        CHART / "templates" / "crds" / "modelqualifications.yaml"
    ),
    CRDS / "modelgrid.firmus.ai_tierpolicies.yaml": (
        CHART / "templates" / "crds" / "tierpolicies.yaml"
    ),
}
POLICY_COPIES = {
    CRDS / "tierpolicies" / "model-card.yaml": CHART
    / "templates"
    / "tierpolicies"
    / "model-card.yaml",
    CRDS / "tierpolicies" / "cv-only.yaml": CHART / "templates" / "tierpolicies" / "cv-only.yaml",
}

KEEP_ANNOTATION = "helm.sh/resource-policy"
HOOK_ANNOTATIONS = ("helm.sh/hook", "helm.sh/hook-delete-policy")

_KEEP_BLOCK = """\
  {{- if .Values.crds.keep }}
  annotations:
    helm.sh/resource-policy: keep
  {{- end }}
"""
_HOOK_BLOCK = """\
  annotations:
    # Applied once the CRDs are served (install with --wait); helm never deletes it.
    helm.sh/hook: post-install,post-upgrade
    helm.sh/hook-delete-policy: hook-failed
"""


def _with_metadata_block(source: str, block: str, origin: str) -> str:
    """`source` with `block` right after its top-level `metadata:` name line."""
    lines = source.splitlines(keepends=True)
    try:
        start = lines.index("metadata:\n")
    except ValueError as exc:
        raise ValueError(f"{origin}: no top-level metadata") from exc
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        if lines[end].startswith("  annotations:"):
            raise ValueError(f"{origin}: has annotations of its own; merge them by hand")
        end += 1
    name = next(
        (i for i in range(start + 1, end) if lines[i].startswith("  name: ")),
        None,
    )
    if name is None:
        raise ValueError(f"{origin}: metadata has no name")
    return "".join([*lines[: name + 1], block, *lines[name + 1 :]])


def _header(source: Path) -> str:
    rel = source.relative_to(REPO)
    return (
        f"{{{{- /* Generated from {rel} by `python -m modelgrid_sandbox.chart`; do not edit."
        " tests/unit/test_chart.py checks it. */}}\n"
    )


def crd_template(source: Path) -> str:
    body = _with_metadata_block(source.read_text(), _KEEP_BLOCK, str(source))
    return f"{_header(source)}{{{{- if .Values.crds.install }}}}\n{body}{{{{- end }}}}\n"


def policy_template(source: Path) -> str:
    body = _with_metadata_block(source.read_text(), _HOOK_BLOCK, str(source))
    return f"{_header(source)}{{{{- if .Values.policies.install }}}}\n{body}{{{{- end }}}}\n"


def expected_copies() -> dict[Path, str]:
    out = {dst: crd_template(src) for src, dst in CRD_COPIES.items()}
    out.update({dst: policy_template(src) for src, dst in POLICY_COPIES.items()})
    return out


def stale_copies() -> list[Path]:
    return [p for p, text in expected_copies().items() if not p.is_file() or p.read_text() != text]


def sync() -> list[Path]:
    """Rewrite the chart's copies that differ from crds/; returns them."""
    stale = stale_copies()
    for path, text in expected_copies().items():
        if path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return stale


def helm_binary() -> Path | None:
    """helm next to the control-plane binaries ($MODELGRID_K8S_BIN), else on PATH."""
    env = os.environ.get("MODELGRID_K8S_BIN")
    if env and (Path(env) / "helm").is_file():
        return Path(env) / "helm"
    found = shutil.which("helm")
    return Path(found) if found else None


def main() -> int:
    for path in sync():
        print(f"rewrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
