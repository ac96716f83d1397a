"""``app.metrics`` defines the daemon's metrics without importing prometheus_client's exposition
module (http.server, wsgiref, ...); serving them on ``metricsPort`` completes the package."""

from __future__ import annotations

import json
import subprocess
import sys

from app.sandbox.processes import child_environment

PROBE = """
import json, sys
from app import metrics
metrics.labelled(metrics.SERVER_REQUESTS, "cni", "200", "POST").inc()
before = sorted(m for m in ("prometheus_client.exposition", "http.server", "wsgiref") if m in sys.modules)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
text = generate_latest(metrics.REGISTRY).decode()
print(json.dumps({"before": before, "type": CONTENT_TYPE_LATEST, "served": [
    line for line in text.splitlines() if line.startswith("multus_server_request_total{")
]}))
"""


def test_metrics_are_defined_without_the_exposition_module_and_still_served() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=child_environment(), timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout)
    assert answer["before"] == []
    assert answer["type"].startswith("text/plain")
    assert answer["served"] == ['multus_server_request_total{code="200",handler="cni",method="post"} 1.0']
