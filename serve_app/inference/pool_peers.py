"""What pool replicas tell each other, through the pool's own handle.

* A new replica, before it takes traffic, asks a running one for its hottest models and
  loads them (``hottest_elsewhere``): the first calls it gets find them warm. A model
  loaded so, or handed over, counts as served by the replica that got it: across a
  rolling replacement (every replica new) the hot models travel on.
* A replica being stopped (scale-down, a rollout) asks the pool to load the models it
  served lately (``hand_over``): ``ready`` calls routed by the ``PoolRouter``, which sends
  a model no running replica holds to the least busy one. So scaling down never takes the
  last copy of a model with recent traffic; it moves it first.

Both are bounded in time and best effort: a pool with no other replica simply starts cold
or stops. Serve routes neither call to the replica making it: it is not running yet, or
no longer.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve.schema import ApplicationStatus

from serve_app.constants import APP_NAME, HANDOVER_S, PREWARM_ASK_S

logger = logging.getLogger("ray.serve")


async def hottest_elsewhere(deployment: str, limit: int) -> list[str]:
    """A running replica's hottest model ids; none if no replica answers in time."""
    handle = serve.get_deployment_handle(deployment, APP_NAME)
    try:
        async with asyncio.timeout(PREWARM_ASK_S):
            found: list[str] = await handle.hottest_models.remote(limit)
            return found
    except Exception as exc:  # no other replica (the first one), or it is busy: start cold
        logger.info("no pool replica named its hot models: %s", type(exc).__name__)
        return []


async def hand_over(deployment: str, model_ids: list[str]) -> int:
    """Have the running replicas load ``model_ids`` (those not held anywhere else are
    loaded by the least busy one); how many were confirmed in time. Nothing when the
    application itself is being deleted (no replica would be left to take them)."""
    if not model_ids or await _app_going_away():
        return 0
    handle = serve.get_deployment_handle(deployment, APP_NAME)
    done = 0
    try:
        async with asyncio.timeout(HANDOVER_S):
            for model_id in model_ids:
                await handle.options(multiplexed_model_id=model_id).ready.remote()
                done += 1
    except Exception as exc:  # out of time, or no replica left: the rest start cold
        logger.warning("handed over %d of %d models: %s", done, len(model_ids),
                       type(exc).__name__)  # fmt: skip
    return done


async def _app_going_away() -> bool:
    try:
        status = await asyncio.to_thread(serve.status)
    except Exception as exc:  # the controller is away: try, within HANDOVER_S
        logger.info("could not read the application's status: %s", type(exc).__name__)
        return False
    app = status.applications.get(APP_NAME)
    return app is None or app.status == ApplicationStatus.DELETING
