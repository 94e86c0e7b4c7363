"""What the daemon imports depends on what it is configured to use (issue #23, memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e_helpers import REPO


def test_a_daemon_on_mqtt_and_a_file_registry_never_imports_the_nats_client(
    tmp_path: Path,
) -> None:
    code = f"""
import sys
import sentinel.cli.main, sentinel.daemon.app
from sentinel.config import SentinelConfig
from sentinel.model.registry import nats_registry, open_registry
config = SentinelConfig.model_validate(
    {{"state_dir": {str(tmp_path)!r}, "streams": [{{"name": "pump", "topic": "p/{{device}}",
    "features": ["a", "b"]}}]}}
)
registry = open_registry(config, role="daemon")
print(type(registry).__name__, nats_registry(registry))
print(sorted(m for m in sys.modules if m.split(".")[0] == "nats"))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[-2:] == ["ModelRegistry None", "[]"]
