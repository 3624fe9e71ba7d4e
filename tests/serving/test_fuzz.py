"""Property-based fuzzing of the live server from its own OpenAPI document (schemathesis).

Every operation gets a bounded number of generated requests, both valid by the schema
(positive) and invalid (negative); none may produce a 5xx, a stack trace, or a status, content
type or body the document does not describe.

schemathesis's pytest plugin (``from_fixture``/``parametrize``) does not run under pytest 9, so
the test drives Hypothesis itself with each operation's strategy.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from servetest_helpers import TOKEN, Server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 12  # per operation and mode: about 700 requests, well under a minute


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_no_server_errors(server: Server, mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=headers)
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if "slow" in operation.path:  # sleeps as long as its input says: fuzzing measures sleep
            continue
        seen.append(operation.label)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            assert response.status_code < 500, response.text[:300]
            assert "Traceback" not in response.text

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (a GET without parameters)
            assert mode == GenerationMode.NEGATIVE, operation.label
    assert "POST /v2/models/iris/infer" in seen and "POST /invocations" in seen
