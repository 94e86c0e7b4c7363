"""Home Assistant MQTT discovery: per stream and device, an alert binary_sensor, a score
sensor, a severity sensor and an acknowledge button (issue #25).

Format: https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery -- a retained config
on ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``, where both ids allow
only letters, digits, ``_`` and ``-``. Every entity of a device shares one ``device`` block,
so Home Assistant shows them as one device.
"""

from __future__ import annotations

import re
from typing import Any

from sentinel import __version__

__all__ = [
    "ACK_PAYLOAD",
    "OFFLINE",
    "ONLINE",
    "SEVERITY_NONE",
    "ack_topic",
    "ack_topic_filter",
    "discovery_config",
    "discovery_messages",
    "discovery_topic",
    "parse_ack_topic",
    "score_topic",
    "severity_topic",
    "slug",
]

ONLINE = "online"
OFFLINE = "offline"
ACK_PAYLOAD = "ACK"  # what the button sends
SEVERITY_NONE = "none"  # the severity sensor's state while the device has no alert
_SEVERITIES = [SEVERITY_NONE, "info", "warning", "critical"]
_SLUG = re.compile(r"[^A-Za-z0-9_-]")


def slug(text: str) -> str:
    """Home Assistant's node and object ids allow letters, digits, _ and - only."""
    return _SLUG.sub("_", text)


def score_topic(prefix: str, stream: str, device: str) -> str:
    return f"{prefix}/score/{stream}/{device}"


def severity_topic(prefix: str, stream: str, device: str) -> str:
    return f"{prefix}/severity/{stream}/{device}"


def ack_topic(prefix: str, stream: str, device: str) -> str:
    return f"{prefix}/command/{stream}/{device}/ack"


def ack_topic_filter(prefix: str) -> str:
    return f"{prefix}/command/+/+/ack"


def parse_ack_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(stream, device) of an acknowledge command's topic; None for any other topic.
    Neither a stream name nor a device (one topic level) contains a ``/``."""
    if not topic.startswith(f"{prefix}/command/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) != 4 or parts[3] != "ack" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def discovery_topic(
    discovery_prefix: str, prefix: str, stream: str, device: str, entity: str = ""
) -> str:
    """The config topic of one entity: ``entity`` "" is the alert binary_sensor (its topic
    as before issue #25), else "score", "severity" or "ack"."""
    component = {"": "binary_sensor", "score": "sensor", "severity": "sensor", "ack": "button"}
    suffix = f"_{entity}" if entity else ""
    return (
        f"{discovery_prefix}/{component[entity]}/{slug(prefix)}/"
        f"{slug(stream)}_{slug(device)}{suffix}/config"
    )


def _common(prefix: str, qos: int, device: str) -> dict[str, Any]:
    node = slug(prefix)
    return {
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


def discovery_config(prefix: str, qos: int, stream: str, device: str) -> dict[str, Any]:
    """The alert entity: ON while the device has an alert, the latest event as its
    attributes, unavailable while the daemon's status topic says offline."""
    return {
        "name": f"{stream} anomaly",
        "unique_id": f"{slug(prefix)}_{slug(stream)}_{slug(device)}",
        "device_class": "problem",
        "state_topic": f"{prefix}/state/{stream}/{device}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": f"{prefix}/alerts/{stream}/{device}",
        **_common(prefix, qos, device),
    }


def discovery_messages(
    discovery_prefix: str, prefix: str, qos: int, stream: str, device: str, ack: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) of every entity of a device: the alert binary_sensor; the score
    sensor (the minute's highest score / threshold, above 1 over the line, with score,
    threshold and window counts as attributes); the severity sensor (none, info, warning,
    critical); with ``ack``, the button that acknowledges the device's open alerts."""
    unique = f"{slug(prefix)}_{slug(stream)}_{slug(device)}"
    common = _common(prefix, qos, device)
    scores = score_topic(prefix, stream, device)
    entities: list[tuple[str, dict[str, Any]]] = [
        ("", discovery_config(prefix, qos, stream, device)),
        (
            "score",
            {
                "name": f"{stream} score",
                "unique_id": f"{unique}_score",
                "state_topic": scores,
                "value_template": "{{ value_json.ratio }}",
                "json_attributes_topic": scores,
                "state_class": "measurement",
                "suggested_display_precision": 2,
                "icon": "mdi:gauge",
                **common,
            },
        ),
        (
            "severity",
            {
                "name": f"{stream} severity",
                "unique_id": f"{unique}_severity",
                "state_topic": severity_topic(prefix, stream, device),
                "device_class": "enum",
                "options": _SEVERITIES,
                "icon": "mdi:alert",
                **common,
            },
        ),
    ]
    if ack:
        entities.append(
            (
                "ack",
                {
                    "name": f"{stream} acknowledge",
                    "unique_id": f"{unique}_ack",
                    "command_topic": ack_topic(prefix, stream, device),
                    "payload_press": ACK_PAYLOAD,
                    "icon": "mdi:check-circle",
                    **common,
                },
            )
        )
    return [
        (discovery_topic(discovery_prefix, prefix, stream, device, entity), config)
        for entity, config in entities
    ]
