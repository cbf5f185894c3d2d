"""What the API process opens at start-up and closes at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from relayq.intake import Intake
from relayq.queueing import Enqueuer
from relayq.settings import Settings
from relayq.store import Database

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    database: Database
    redis: aioredis.Redis
    enqueuer: Enqueuer
    intake: Intake

    @classmethod
    def open(cls, settings: Settings) -> Services:
        database = Database(settings.database_url)
        redis = aioredis.Redis.from_url(settings.redis_url)
        enqueuer = Enqueuer(settings=settings)
        intake = Intake(settings=settings, database=database, enqueuer=enqueuer, redis=redis)
        return cls(
            settings=settings, database=database, redis=redis, enqueuer=enqueuer, intake=intake
        )

    async def aclose(self) -> None:
        self.enqueuer.close()
        await self.redis.aclose()
        await self.database.aclose()
