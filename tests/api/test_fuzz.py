"""The API fuzzed from its own OpenAPI document (schemathesis) against a running daemon:
no request, however odd, gets a 5xx (but /healthz's documented 503), and every answer
conforms to the document -- status code, content type, headers and body schema."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.api.helpers import TOKEN, Api
from tests.e2e_helpers import readings_committed, wait_for
from tests.ops_helpers import publish_fleet

pytestmark = [pytest.mark.integration]

# Per operation and mode (valid and invalid requests): 12 operations, about 600 requests
# in all, some 25 s on a loaded 2-core box.
EXAMPLES = 30


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_api_holds_to_its_openapi_document(api: Api) -> None:
    broker = api.running.app.config.mqtt
    sent = publish_fleet(f"mqtt://{broker.host}:{broker.port}", broker.protocol, 2, steps=30)
    wait_for(lambda: readings_committed(api.url) == sent, 60, "readings committed")
    base = str(api.client.base_url).rstrip("/")
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) == 13
    headers = {"Authorization": f"Bearer {TOKEN}"}  # the writes get past the token too
    seen: dict[str, set[int]] = {}

    for operation, mode in itertools.product(operations, GenerationMode):
        if mode is GenerationMode.NEGATIVE and not operation.path.startswith("/api/"):
            continue  # /healthz and /metrics take no input to get wrong
        statuses = seen.setdefault(f"{mode.value} {operation.label}", set())
        _fuzz(operation, mode, base, headers, statuses)
    # Requests reached the endpoints' own code, not only the validation in front of it.
    assert 200 in seen["positive GET /api/v1/alerts"]
    assert 200 in seen["positive GET /api/v1/devices"]
    assert 404 in seen["positive POST /api/v1/alerts/{alert_id}/ack"]
    # Invalid requests were refused by the validation, with its 422.
    assert 422 in seen["negative GET /api/v1/alerts"]
    assert 422 in seen["negative POST /api/v1/alerts/{alert_id}/ack"]


def _fuzz(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    base: str,
    headers: dict[str, str],
    statuses: set[int],
) -> None:
    """EXAMPLES requests to ``operation``, each checked against the document."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests each run: a failure is reproducible
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        response = case.call(base_url=base, headers=headers)
        case.validate_response(response, excluded_checks=[not_a_server_error])
        documented = response.status_code == 503 and operation.path == "/healthz"
        assert response.status_code < 500 or documented, (
            f"{operation.label}: {response.status_code} {response.text[:300]}"
        )
        statuses.add(response.status_code)

    fuzz()
