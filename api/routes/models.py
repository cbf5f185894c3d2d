"""``/v1/models``: the models callers can name, in OpenAI's list shape."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ReadCaller, ServicesDep
from api.errors import ERROR_RESPONSES, APIError
from api.services import Services
from relayq.auth.caller import Caller

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


async def _models(services: Services, caller: Caller) -> list[Model]:
    """Every model name, or with a model allow-list, the names it allows."""
    models = await _all_models(services)
    if caller.models is None:
        return models
    router = services.router
    return [
        model
        for model in models
        if caller.allows(model.id, None if (found := router.route(model.id)) is None else found[0])
    ]


async def _all_models(services: Services) -> list[Model]:
    created = int(services.started_at)
    models = [
        Model(id=name, created=created, owned_by="relayq") for name in services.router.model_names
    ]
    published = await services.catalog.all_published()
    for provider, ids in sorted(published.items()):
        models.extend(
            Model(id=f"{provider}/{model}", created=created, owned_by=provider)
            for model in sorted(ids)
        )
    return models


@router.get("", response_model=ModelList)
async def list_models(caller: ReadCaller, services: ServicesDep) -> ModelList:
    """Routed models and their aliases, then ``<provider>/<model>`` for each model a
    provider publishes (OpenAI, OpenRouter, Ollama…), cached for a while. A key with a
    model allow-list sees only the models it may use."""
    return ModelList(data=await _models(services, caller))


@router.get("/{model:path}", response_model=Model)
async def retrieve_model(model: str, caller: ReadCaller, services: ServicesDep) -> Model:
    """One model, by any name ``GET /v1/models`` lists (to the caller)."""
    for entry in await _models(services, caller):
        if entry.id == model:
            return entry
    raise APIError(
        404, f"The model '{model}' does not exist.", code="model_not_found", param="model"
    )
