"""The OpenAPI schema is true: schemathesis calls every operation of the running gateway (uvicorn,
a real broker) with generated requests and an admin token, and checks each answer against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.service import Gateway
from tests.integration.test_api_boundaries import api_gateway
from tests.integration.test_tickets_api import auth, open_tickets
from tests.servers import MOSQUITTO, Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = 20  # per operation and mode: about 40 s for the ~25 operations
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for every operation, with tickets to find (and act on)."""
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    tmp: Path = tmp_path_factory.mktemp("schema")
    push = {"enabled": True, "secret": "schema-path-secret-0123"}  # the push routes are in the schema too
    platforms = {"ctwing": push, "onenet": push}
    with Mosquitto(tmp) as broker, api_gateway(tmp, broker, platforms=platforms) as gw:
        open_tickets(gw)
        yield gw


def test_every_operation_keeps_its_documented_promises(running: Gateway) -> None:
    """Every operation with generated (valid and invalid) requests; one report of all that failed."""
    schema = schemathesis.openapi.from_url(f"{running.api_url}/openapi.json")
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:
        for mode in schemathesis.GenerationMode:  # valid requests, then invalid ones

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
            )
            def call(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=auth("admin"), checks=CHECKS)

            try:
                call()
            except Unsatisfiable:
                continue  # nothing of this operation can be invalid (a free-text path segment)
            except (Exception, FailureGroup) as exc:  # every operation is tried; all are reported
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{why}" for label, why in failures.items())
