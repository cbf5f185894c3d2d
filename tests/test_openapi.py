"""docs/openapi.json is the API's current OpenAPI document."""

from __future__ import annotations

import json

from api.openapi import openapi_document
from tests.stack import ROOT


def test_the_committed_openapi_document_is_current() -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())

    assert committed == openapi_document(), (
        "docs/openapi.json is stale: run `python -m api.openapi docs/openapi.json`"
    )


def test_the_document_describes_the_jobs_api() -> None:
    document = openapi_document()

    paths = document["paths"]
    assert set(paths["/v1/jobs"]) == {"get", "post"}
    assert "get" in paths["/v1/jobs/{job_id}"]
    assert "post" in paths["/v1/jobs/{job_id}/cancel"]
    assert "JobCreate" in document["components"]["schemas"]
