"""``/healthz``'s line for a stream still in its cold start: how far it is, by the slower of
the readings it needs and the span of its time they must cover."""

from __future__ import annotations

from sentinel.config import ColdStartConfig
from sentinel.daemon.health import cold_start_problem


def test_a_cold_start_waiting_for_its_span_says_how_much_of_it_is_covered() -> None:
    rule = ColdStartConfig()  # 3,000 readings covering 3,600 s
    assert cold_start_problem("pump", rule, 12_000, 900.0) == (
        "model: no model yet for stream 'pump': cold start 25%, 12,000 readings "
        "(3,000 needed) covering 900 s of its time (3,600 needed)"
    )


def test_a_cold_start_counted_in_readings_alone_names_no_span() -> None:
    rule = ColdStartConfig(readings=2000, span=0)
    assert cold_start_problem("pump", rule, 500, 0.0) == (
        "model: no model yet for stream 'pump': cold start 25%, 500 readings (2,000 needed)"
    )


def test_a_collected_cold_start_says_it_is_training() -> None:
    line = cold_start_problem("pump", ColdStartConfig(), 43_200, 3600.0)
    assert line == (
        "model: no model yet for stream 'pump': cold start collected, training "
        "(log: training_progress, retrain_finished)"
    )
