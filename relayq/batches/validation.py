"""Checking a batch's input, line by line, as OpenAI's Batch API does.

Every line is read and every bad one reported, with its 1-based number, a
code and a message that says what to fix; nothing runs unless all lines
are good. Models are checked apart (routing is async): see
:mod:`relayq.batches.preparation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from relayq.providers import check_controls, embedding_field_errors
from relayq.schemas.batches import (
    COMPLETIONS_ENDPOINT,
    EMBEDDINGS_ENDPOINT,
    IMAGES_ENDPOINT,
    BatchErrorItem,
)
from relayq.schemas.chat import ChatCompletionRequest
from relayq.schemas.completions import TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest
from relayq.schemas.images import ImageGenerationRequest
from relayq.schemas.json_values import first_unkeepable, text_problem
from relayq.schemas.params import param_path

__all__ = ["LineValidator", "ValidRequest"]


@dataclass(frozen=True)
class ValidRequest:
    line: int
    custom_id: str
    model: str
    body: dict[str, Any]
    """The request as a job stores it."""


class LineValidator:
    """Checks lines in order and keeps the errors (the first ``max_errors`` of them)."""

    def __init__(self, *, endpoint: str, max_errors: int) -> None:
        self.endpoint = endpoint
        self.max_errors = max_errors
        self.errors: list[BatchErrorItem] = []
        self.error_count = 0
        self._seen: set[str] = set()

    def error(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(BatchErrorItem(code=code, message=message, param=param, line=line))

    def check_lines(self, first_line: int, lines: Sequence[bytes]) -> list[ValidRequest]:
        """Check consecutive lines numbered from ``first_line``; blank lines are skipped."""
        valid = []
        for offset, raw in enumerate(lines):
            if raw.strip():
                request = self.check(first_line + offset, raw)
                if request is not None:
                    valid.append(request)
        return valid

    def check(self, line: int, raw: bytes) -> ValidRequest | None:
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.error(line, "invalid_json_line", f"Line {line} is not valid JSON: {exc}.")
            return None
        if not isinstance(item, dict):
            self.error(
                line,
                "invalid_request_line",
                f"Line {line} must be a JSON object with custom_id, method, url and body.",
            )
            return None
        # One error per line: its first problem.
        custom_id = self._custom_id(line, item.get("custom_id"))
        if custom_id is None or not self._request_line(line, item):
            return None
        body = self._body(line, item.get("body"))
        if body is None:
            return None
        return ValidRequest(line=line, custom_id=custom_id, model=body["model"], body=body)

    def _custom_id(self, line: int, value: object) -> str | None:
        if not isinstance(value, str) or not value:
            self.error(
                line,
                "missing_custom_id",
                f"Line {line} has no custom_id: give every request a unique, non-empty string.",
                "custom_id",
            )
            return None
        problem = text_problem(value)
        if problem is not None:
            self.error(line, "invalid_custom_id", f"Line {line}: custom_id {problem}.", "custom_id")
            return None
        if len(value) > 512:
            self.error(
                line,
                "invalid_custom_id",
                f"Line {line}: custom_id exceeds 512 characters.",
                "custom_id",
            )
            return None
        if value in self._seen:
            self.error(
                line,
                "duplicate_custom_id",
                f"Line {line} repeats custom_id '{value[:100]}': each must be unique in the batch.",
                "custom_id",
            )
            return None
        self._seen.add(value)
        return value

    def _request_line(self, line: int, item: dict[str, Any]) -> bool:
        method = item.get("method", "POST")
        if method != "POST":
            self.error(
                line,
                "invalid_method",
                f"Line {line}: method must be 'POST', not {method!r}.",
                "method",
            )
            return False
        url = item.get("url")
        if url != self.endpoint:
            self.error(
                line,
                "invalid_url",
                f"Line {line}: url is {url!r}, but this batch's endpoint is '{self.endpoint}'; "
                "every line must call the batch's endpoint.",
                "url",
            )
            return False
        return True

    def _body(self, line: int, body: object) -> dict[str, Any] | None:
        if not isinstance(body, dict):
            self.error(line, "invalid_body", f"Line {line}: body must be a JSON object.", "body")
            return None
        # What POST /v1/jobs refuses at its edge (api/request_checks.py), refused here too.
        found = first_unkeepable(body)
        if found is not None:
            # Too deep: the field at the top, as the API names it (its path is 65 levels long).
            param = param_path(found.path[:1] if found.too_deep else found.path, prefix="body")
            message = f"Line {line}: invalid '{param}': {found.reason}."
            self.error(line, "invalid_request", message, param)
            return None
        if self.endpoint == EMBEDDINGS_ENDPOINT:
            return self._closed_body(line, body, EmbeddingRequest)
        if self.endpoint == IMAGES_ENDPOINT:
            return self._closed_body(line, body, ImageGenerationRequest)
        model = TextCompletionRequest if self.endpoint == COMPLETIONS_ENDPOINT else None
        try:
            request = (model or ChatCompletionRequest).model_validate(body)
        except ValidationError as exc:
            self._invalid(line, exc.errors())
            return None
        if request.stream:
            self.error(
                line,
                "invalid_request",
                f"Line {line}: stream is not supported in a batch; remove it or set it to false.",
                "body.stream",
            )
            return None
        return request.model_dump(mode="json", exclude_none=True)

    def _closed_body(
        self,
        line: int,
        body: dict[str, Any],
        schema: type[EmbeddingRequest] | type[ImageGenerationRequest],
    ) -> dict[str, Any] | None:
        """An embeddings or images body, checked as ``POST /v1/embeddings`` and
        ``POST /v1/images/generations`` check theirs: no field but OpenAI's and an
        adapter's controls."""
        try:
            request = schema.model_validate(body)
        except ValidationError as exc:
            self._invalid(line, exc.errors())
            return None
        extra = dict(request.model_extra or {})
        errors = embedding_field_errors(extra) + check_controls(extra)
        if errors:
            self._invalid(line, errors)
            return None
        return {**request.model_dump(mode="json", exclude_none=True), **extra}

    def _invalid(self, line: int, errors: Sequence[Any]) -> None:
        """The line's first validation error, its field named from ``body``."""
        first = errors[0]
        param = param_path(first["loc"], prefix="body")
        if first["type"] == "missing":
            message = f"Line {line}: missing required parameter '{param}'."
        else:
            message = f"Line {line}: invalid '{param}': {first['msg']}."
        self.error(line, "invalid_request", message, param)
