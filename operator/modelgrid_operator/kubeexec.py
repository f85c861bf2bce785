"""Exec credential plugins (`client.authentication.k8s.io`): a kubeconfig user whose token or
client certificate a command prints, as cloud providers' kubeconfigs use, run as kubectl runs
them for a non-interactive client; and `KubeconfigError`, as which every credential problem is
reported (one line). Does I/O: runs the plugin.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

#: An exec plugin's credential is renewed this long before it says it expires.
EXEC_RENEW_MARGIN_S = 60.0
EXEC_TIMEOUT_S = 60.0


class KubeconfigError(Exception):
    """No usable kubeconfig, context or in-cluster account (one line, for a person)."""


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig user's `exec`: a command that prints an ExecCredential."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    #: the cluster as the plugin is told of it (`provideClusterInfo: true`), else None
    cluster: tuple[tuple[str, Any], ...] | None = None


def run_exec_plugin(plugin: ExecPlugin) -> dict[str, Any]:
    """Run the plugin as kubectl does for a non-interactive client (KUBERNETES_EXEC_INFO set,
    no stdin) and return its status."""
    spec: dict[str, Any] = {"interactive": False}
    if plugin.cluster is not None:
        spec["cluster"] = dict(plugin.cluster)
    info = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec}
    env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
    try:
        done = subprocess.run(
            [plugin.command, *plugin.args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=EXEC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeconfigError(f"the exec plugin {plugin.command} did not run: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise KubeconfigError(
            f"the exec plugin {plugin.command} failed ({done.returncode}): {last}"
        )
    try:
        doc = json.loads(done.stdout)
    except ValueError as exc:
        raise KubeconfigError(f"the exec plugin {plugin.command} printed no JSON") from exc
    status = doc.get("status") if isinstance(doc, dict) else None
    if not isinstance(status, dict):
        raise KubeconfigError(f"the exec plugin {plugin.command} printed no status")
    return status


def expiry(stamp: Any) -> tuple[float, dt.datetime | None]:
    """Seconds until an RFC 3339 expiry less the renewal margin, and the expiry; a credential
    without one lasts the process (kubectl's reading)."""
    if not stamp:
        return float("inf"), None
    try:
        when = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return 0.0, None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    left = (when - dt.datetime.now(dt.UTC)).total_seconds() - EXEC_RENEW_MARGIN_S
    return max(left, 0.0), when
