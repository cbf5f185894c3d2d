"""A wire-level fake of an Azure OpenAI resource's chat completions.

It serves both routes Azure documents, for chat completions, embeddings,
legacy completions and image generation: ``POST /openai/deployments/{deployment}
/chat/completions?api-version=...`` (and ``.../embeddings``, ``.../completions``,
``.../images/generations``) (404 ``DeploymentNotFound`` for a
deployment it does not have, 404 ``Resource not found`` without an
``api-version``) and ``POST /openai/v1/chat/completions`` (and
``/openai/v1/embeddings``, ``/openai/v1/completions``,
``/openai/v1/images/generations``), and the Responses API
(:mod:`tests.fakes.responses`) on ``POST /openai/v1/responses`` and
``POST /openai/responses?api-version=...`` (404 without one), neither under a
deployment: the body's ``model`` names it. Images are drawn as the deployed model
(:attr:`FakeAzureOpenAI.model_name`) draws them on OpenAI
(:mod:`tests.fakes.images`), each with Azure's ``prompt_filter_results`` and
``content_filter_results`` as in tests/fixtures/azure_openai/images_generation.json
(a GPT image model's carry none: Azure's reference says it returns no content
filtering annotations). The key goes in the
``api-key`` header. Answers are OpenAI's with Azure's additions, modelled on
the examples in tests/fixtures/azure_openai/: ``model`` is the deployed
model's name, not the deployment's; ``prompt_filter_results`` on the
completion, or on a first stream chunk with empty ``choices``, ``id``,
``model`` and ``object``; ``content_filter_results`` on each choice.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply, embeddings_list

__all__ = ["FILTER_OK", "FakeAzureOpenAI", "azure_error", "content_filter_error"]

FILTER_OK: dict[str, Any] = {
    category: {"filtered": False, "severity": "safe"}
    for category in ("hate", "self_harm", "sexual", "violence")
}
"""Azure's content filter results for content that passed."""


def azure_error(code: str, message: str) -> dict[str, Any]:
    """Azure's error body for errors outside OpenAI's own (auth, routing, quota)."""
    return {"error": {"code": code, "message": message}}


def content_filter_error() -> dict[str, Any]:
    """Azure's 400 body for a prompt its content filter rejected."""
    message = (
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry."
    )
    return {
        "error": {
            "message": message,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    **FILTER_OK,
                    "violence": {"filtered": True, "severity": "medium"},
                    "jailbreak": {"filtered": False, "detected": False},
                },
            },
        }
    }


class FakeAzureOpenAI(FakeOpenAI):
    """An Azure OpenAI resource with ``deployments`` of ``model_name``.

    :attr:`base_url` is the resource endpoint, as ``ProviderSettings.base_url``
    takes it.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        content: str = DEFAULT_CONTENT,
        deployments: tuple[str, ...] = ("gpt-4o-prod",),
        model_name: str = "gpt-4o-2024-11-20",
    ) -> None:
        super().__init__(api_key=api_key, content=content)
        self.deployments = deployments
        self.model_name = model_name

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, like ``https://<resource>.openai.azure.com``."""
        return self.origin

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(
            "/openai/deployments/{deployment}/chat/completions", self._deployment_chat
        )
        app.router.add_post("/openai/v1/chat/completions", self._chat_completions)
        app.router.add_get("/openai/v1/models", self._models)
        app.router.add_post(
            "/openai/deployments/{deployment}/embeddings", self._deployment_embeddings
        )
        app.router.add_post("/openai/v1/embeddings", self._embeddings)
        app.router.add_post(
            "/openai/deployments/{deployment}/completions", self._deployment_completions
        )
        app.router.add_post("/openai/v1/completions", self._completions)
        app.router.add_post(
            "/openai/deployments/{deployment}/images/generations", self._deployment_images
        )
        app.router.add_post("/openai/v1/images/generations", self._images)
        app.router.add_post("/openai/v1/responses", self._responses)
        app.router.add_post("/openai/responses", self._dated_responses)
        return app

    async def _dated_responses(self, request: web.Request) -> web.StreamResponse:
        """Responses on the dated route: no deployment in the path (the body's ``model``
        names it), and no answer without an ``api-version``."""
        if "api-version" not in request.query:
            await self._record(request)
            return web.json_response(azure_error("404", "Resource not found"), status=404)
        return await self._responses(request)

    def images_model(self, request: web.Request, body: Any) -> str:
        """The deployed model draws, whatever the body names (the deployment)."""
        return self.model_name

    def images_body(self, body: dict[str, Any], *, model: str) -> dict[str, Any]:
        answer = super().images_body(body, model=model)
        if not model.startswith("gpt-image"):
            for image in answer["data"]:
                image["prompt_filter_results"] = FILTER_OK
                image["content_filter_results"] = FILTER_OK
        return answer

    async def _deployment_completions(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._unknown_deployment(request)) is not None:
            return refused
        return await self._completions(request)

    async def _deployment_images(self, request: web.Request) -> web.Response:
        if (refused := await self._unknown_deployment(request)) is not None:
            return refused
        return await self._images(request)

    def embeddings_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's list, naming the deployed model as Azure does."""
        return embeddings_list(body, model=self.model_name)

    async def _deployment_embeddings(self, request: web.Request) -> web.Response:
        if (refused := await self._unknown_deployment(request)) is not None:
            return refused
        return await self._embeddings(request)

    def authorized(self, request: web.Request) -> bool | None:
        given = request.headers.get("api-key")
        return None if given is None else given == self.api_key

    def unauthorized_body(self, *, key_given: bool) -> dict[str, Any]:
        return azure_error(
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
            "to provide a valid key for an active subscription and use a correct regional "
            "API endpoint for your resource.",
        )

    async def _deployment_chat(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._unknown_deployment(request)) is not None:
            return refused
        return await self._chat_completions(request)

    async def _unknown_deployment(self, request: web.Request) -> web.Response | None:
        """Azure's 404 for a call without ``api-version`` or to a missing deployment."""
        if "api-version" not in request.query:
            await self._record(request)
            return web.json_response(azure_error("404", "Resource not found"), status=404)
        if request.match_info["deployment"] not in self.deployments:
            await self._record(request)
            message = (
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again."
            )
            return web.json_response(azure_error("DeploymentNotFound", message), status=404)
        return None

    def completion_body(self, body: dict[str, Any], content: str, reply: Reply) -> dict[str, Any]:
        answer = super().completion_body(body, content, reply)
        answer["model"] = self.model_name
        answer.pop("service_tier", None)
        answer["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTER_OK}]
        for choice in answer["choices"]:
            choice["content_filter_results"] = FILTER_OK
        return answer

    def stream_chunks(
        self, body: dict[str, Any], content: str, reply: Reply
    ) -> list[dict[str, Any]]:
        chunks = super().stream_chunks(body, content, reply)
        for chunk in chunks:
            chunk["model"] = self.model_name
            for choice in chunk["choices"]:
                choice["content_filter_results"] = FILTER_OK if choice["delta"] else {}
        prompt_filter = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTER_OK}],
        }
        return [prompt_filter, *chunks]
