"""Home Assistant MQTT discovery: one binary_sensor per stream and device.

Format: https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery -- a retained config
on ``<discovery_prefix>/binary_sensor/<node_id>/<object_id>/config``, where both ids allow
only letters, digits, ``_`` and ``-``.
"""

from __future__ import annotations

import re
from typing import Any

from sentinel import __version__

__all__ = ["OFFLINE", "ONLINE", "discovery_config", "discovery_topic", "slug"]

ONLINE = "online"
OFFLINE = "offline"
_SLUG = re.compile(r"[^A-Za-z0-9_-]")


def slug(text: str) -> str:
    """Home Assistant's node and object ids allow letters, digits, _ and - only."""
    return _SLUG.sub("_", text)


def discovery_topic(discovery_prefix: str, prefix: str, stream: str, device: str) -> str:
    return f"{discovery_prefix}/binary_sensor/{slug(prefix)}/{slug(stream)}_{slug(device)}/config"


def discovery_config(prefix: str, qos: int, stream: str, device: str) -> dict[str, Any]:
    """The entity: ON while the device has an alert, the latest event as its attributes,
    unavailable while the daemon's status topic says offline."""
    node = slug(prefix)
    return {
        "name": f"{stream} anomaly",
        "unique_id": f"{node}_{slug(stream)}_{slug(device)}",
        "device_class": "problem",
        "state_topic": f"{prefix}/state/{stream}/{device}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": f"{prefix}/alerts/{stream}/{device}",
        "availability_topic": f"{prefix}/status",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": qos,
        "device": {
            "identifiers": [f"{node}_{slug(device)}"],
            "name": device,
            "manufacturer": "Sentinel",
            "model": "anomaly detection",
            "sw_version": __version__,
        },
        "origin": {"name": "Sentinel", "sw_version": __version__},
    }
