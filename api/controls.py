"""Adapter controls at the edge: checked on job bodies, described in the OpenAPI document.

An adapter may take per-request controls (the mock's ``mock``; see
:attr:`relayq.providers.base.Provider.controls_model`). The job schemas know
nothing of them; the routes that take job bodies check them here, and the
document describes them as optional fields of ``JobCreate``, as callers send them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from relayq.providers import check_controls, controls_models, embedding_field_errors
from relayq.schemas.embeddings import EmbeddingRequest
from relayq.schemas.images import ImageGenerationRequest
from relayq.schemas.jobs import CallRequest

__all__ = ["checked_controls", "document_controls"]

_REF = "#/components/schemas/{model}"


def checked_controls(
    body: CallRequest,
) -> None:
    """Refuse (400, naming the field) adapter controls that their adapter would refuse,
    and in an embeddings or an images body any other field relayq does not carry.

    Valid ones are stored as parsed (see :func:`relayq.providers.check_controls`).
    """
    if not body.model_extra:
        return
    errors = []
    if isinstance(body, EmbeddingRequest | ImageGenerationRequest):
        errors = embedding_field_errors(body.model_extra)
    errors += check_controls(body.model_extra)
    if errors:
        located = [{**error, "loc": ("body", *error["loc"])} for error in errors]
        raise RequestValidationError(located)


def document_controls(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document list each adapter's controls as a field of the job
    bodies (``JobCreate``, ``EmbeddingJobCreate``, ``CompletionJobCreate``,
    ``ImageJobCreate``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document["components"]["schemas"]
        for name, model in controls_models().items():
            schemas[model.__name__] = model.model_json_schema(ref_template=_REF)
            for body in (
                "JobCreate",
                "EmbeddingJobCreate",
                "CompletionJobCreate",
                "ImageJobCreate",
            ):
                if body in schemas:
                    schemas[body]["properties"][name] = {
                        "anyOf": [{"$ref": _REF.format(model=model.__name__)}, {"type": "null"}]
                    }
        return document

    app.openapi = openapi  # type: ignore[method-assign]
