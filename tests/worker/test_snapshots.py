"""thresholds.json is written in pieces that make exactly what json.dumps would (issue #23)."""

from __future__ import annotations

import json

import pytest

from sentinel.judge.history import pack
from sentinel.worker.snapshots import _pieces

SNAPSHOT = {
    "schema": 1,
    "streams": {
        "pump": {
            "model_version": "v1",
            "devices": {
                "a": {"normal_seen": 3, "recent": pack([1.0, 2.5], "float32"), "watch": None},
                'b \u00e9"': {"normal_seen": 0, "recent": [], "spot": {"t": 1e-300}},
            },
            "spikes": {},
            "constants": {"a": {"values": [[0.0, 1.0]]}},
        },
        "empty": {},
    },
}


@pytest.mark.parametrize("depth", [0, 1, 2, 4, 9])
def test_pieces_join_to_json_dumps(depth: int) -> None:
    pieces = list(_pieces(SNAPSHOT, depth))
    assert "".join(pieces) == json.dumps(SNAPSHOT)
    assert json.loads("".join(pieces)) == SNAPSHOT


def test_no_piece_holds_more_than_one_devices_data() -> None:
    devices = {str(d): {"x": [0.5] * 100} for d in range(50)}
    big = {"schema": 1, "streams": {"pump": {"devices": devices}}}
    pieces = list(_pieces(big, 4))
    one = len(json.dumps({"x": [0.5] * 100}))
    assert max(len(p) for p in pieces) == one
    assert "".join(pieces) == json.dumps(big)
