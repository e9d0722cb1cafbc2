"""Stand-ins for Serve deployment handles, for unit tests of the router's collaborators.

A handle method is called as ``handle.method.remote(*args)`` and returns an awaitable;
``FakeHandle`` records each call and answers it with a Python function the test gives.
Only the transport is faked: the collaborators under test are the real classes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class _Response:
    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self.cancelled = False

    def __await__(self) -> Any:
        return self._coro.__await__()

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    def __init__(self, owner: FakeHandle, name: str) -> None:
        self._owner, self._name = owner, name

    def remote(self, *args: Any) -> _Response:
        self._owner.calls.append((self._name, self._owner.model_id, args))
        answer = self._owner.answers[self._name]

        async def run() -> Any:
            await loop_turn()  # a real call always yields to the loop
            result = answer(*args)
            return await result if asyncio.iscoroutine(result) else result

        return _Response(run())


class FakeHandle:
    """``answers`` maps a method name to a function of the call's arguments (it may raise,
    or be async); ``options(multiplexed_model_id=...)`` returns a handle sharing them."""

    def __init__(
        self,
        answers: dict[str, Callable[..., Any]],
        deployment_name: str = "fake",
        model_id: str | None = None,
        calls: list[tuple[str, str | None, tuple[Any, ...]]] | None = None,
    ) -> None:
        self.answers = answers
        self.deployment_name = deployment_name
        self.model_id = model_id
        self.calls = [] if calls is None else calls
        self.options_made = 0

    def options(self, multiplexed_model_id: str) -> FakeHandle:
        self.options_made += 1
        return FakeHandle(self.answers, self.deployment_name, multiplexed_model_id, self.calls)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_") or name not in self.answers:
            raise AttributeError(name)
        return _Method(self, name)


async def loop_turn() -> None:
    """Let every task that is ready run once (one pass of the event loop)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done
