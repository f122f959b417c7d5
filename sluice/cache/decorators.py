"""``cached_ai_call``: cache a function's result, keyed from its arguments.

Works on ``async def`` functions, plain functions and Celery tasks (put it under ``@app.task`` so
Celery registers the cached function under the original name). ``CACHE_ENABLED=false`` bypasses it
entirely: the function is called and the store is never touched.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from sluice.cache.ai_cache import AIResultCache, get_ai_cache
from sluice.cache.keys import CacheKey, CacheKeyGenerator
from sluice.cache.policy import RESPONSE, check_content_type

F = TypeVar("F", bound=Callable[..., Any])
CacheSource = AIResultCache | Callable[[], AIResultCache] | None


def _resolve(cache: CacheSource) -> AIResultCache:
    if cache is None:
        return get_ai_cache()
    if isinstance(cache, AIResultCache):
        return cache
    return cache()


def _is_bound_task(value: Any) -> bool:
    # A bound Celery task passes itself first; it says nothing about the result.
    return hasattr(value, "request") and hasattr(value, "apply_async")


def _call_params(signature: inspect.Signature, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The call's parameters with ``**kwargs`` flattened, so ``chat(m, temperature=0.9)`` is seen."""
    params = dict(arguments)
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in params:
            params.update(params.pop(name))
    return params


def cached_ai_call(
    cache: CacheSource = None,
    content_type: str = "analysis",
    ttl: float | None = None,
    usage_of: Callable[[Any], Mapping[str, Any] | None] | None = None,
    model: str | None = None,
) -> Callable[[F], F]:
    """Decorate a function so repeated calls with the same arguments are served from ``cache``.

    ``cache`` is an :class:`AIResultCache`, a callable returning one, or None for
    :func:`get_ai_cache` (resolved at call time, so a module can decorate before settings load).
    For ``content_type="response"``, calls whose arguments make the response uncacheable
    (``temperature`` above the limit, ``n > 1``, ``stream``) always run the function.
    ``model`` is part of every key (two decorations differing only in it never share an answer).
    An argument that is not JSON data raises :class:`~sluice.errors.InvalidInput` naming it.
    """
    check_content_type(content_type)
    if ttl is not None and ttl <= 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        name = f"{func.__module__}.{func.__qualname__}"

        def plan(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[AIResultCache, CacheKey] | None:
            target = _resolve(cache)
            if not target.enabled:
                return None
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = {k: v for k, v in bound.arguments.items() if not _is_bound_task(v)}
            if content_type == RESPONSE and target.config.response_cacheable(
                _call_params(signature, arguments)
            ):
                target.stats.incr(RESPONSE, "uncacheable")
                return None
            return target, CacheKeyGenerator.call(content_type, name, arguments, model)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                planned = plan(args, kwargs)
                if planned is None:
                    return await func(*args, **kwargs)
                target, key = planned
                return await target.get_or_compute(
                    content_type, key, lambda: func(*args, **kwargs), ttl, model, usage_of
                )

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            planned = plan(args, kwargs)
            if planned is None:
                return func(*args, **kwargs)
            target, key = planned
            return target.sync.get_or_compute(
                content_type, key, lambda: func(*args, **kwargs), ttl, model, usage_of
            )

        return cast(F, wrapper)

    return decorate
