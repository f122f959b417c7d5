"""CDN purge providers: CloudFront, Cloudflare, Fastly and a generic HTTP webhook.

Each provider turns a list of purge paths into API calls (chunked to the API's limits, patterns
widened to what it accepts) and runs them with exponential backoff on rate limits (HTTP 429,
CloudFront's ``TooManyInvalidationsInProgress``) and transient failures. When a call still fails,
:class:`PurgeFailed` carries every path not yet purged so the caller can re-queue them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from sluice.cdn.config import CDNSettings
from sluice.cdn.purgepaths import (
    EVERYTHING,
    is_pattern,
    pattern_directory,
    surrogate_key_for_pattern,
    widen_to_trailing_wildcard,
)
from sluice.errors import BackendUnavailable, ConfigurationError
from sluice.retrying import backoff_with_jitter, parse_retry_after

if TYPE_CHECKING:
    import httpx  # loaded by the HTTP providers: every worker imports this module, few purge

log = logging.getLogger(__name__)


class PurgeError(BackendUnavailable):
    """A purge call failed in a way retrying will not fix (bad credentials, rejected request)."""


class RateLimited(BackendUnavailable):
    """The CDN asked us to slow down; ``retry_after`` is its hint in seconds, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PurgeFailed(BackendUnavailable):
    """A purge stopped part-way; ``remaining`` holds the queued paths that were not purged."""

    def __init__(self, message: str, remaining: list[str], retry_after: float | None) -> None:
        super().__init__(message)
        self.remaining = remaining
        self.retry_after = retry_after


@dataclass(frozen=True)
class PurgeCall:
    """One API request and the queued paths it purges."""

    covers: tuple[str, ...]
    run: Callable[[], None]
    description: str
    #: What the call really purges when the provider widens (``/*`` for a purge of everything);
    #: empty when that is exactly ``covers``.
    widened: tuple[str, ...] = ()

    @property
    def purges(self) -> tuple[str, ...]:
        """The purge paths this call makes stale at the edge."""
        return self.widened or self.covers


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    """``items`` in consecutive lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class PurgeProvider(ABC):
    """Base of every provider: plans calls, then runs them with backoff."""

    name = "provider"

    def __init__(self, settings: CDNSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.sleep = sleep

    @abstractmethod
    def calls(self, paths: list[str]) -> list[PurgeCall]:
        """The API calls that purge ``paths``."""

    def purged_by(self, paths: list[str]) -> list[str]:
        """Everything a purge of ``paths`` makes stale, widened as this provider widens patterns
        (a flush skips what an earlier call of the same flush already covered)."""
        return [p for call in self.calls(paths) for p in call.purges]

    def purge(self, paths: list[str]) -> int:
        """Purge ``paths``; return how many API calls it took. Raises :class:`PurgeFailed`."""
        planned = self.calls(paths)
        for index, call in enumerate(planned):
            try:
                self._with_backoff(call)
            except BackendUnavailable as exc:
                remaining = [p for c in planned[index:] for p in c.covers]
                retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
                raise PurgeFailed(f"{self.name}: {exc}", remaining, retry_after) from exc
        return len(planned)

    def _with_backoff(self, call: PurgeCall) -> None:
        settings = self.settings
        for attempt in range(settings.max_retries + 1):
            try:
                call.run()
                return
            except PurgeError:
                raise
            except BackendUnavailable as exc:
                if attempt >= settings.max_retries:
                    raise
                hint = exc.retry_after if isinstance(exc, RateLimited) else None
                delay = (
                    hint
                    if hint is not None
                    else backoff_with_jitter(attempt, settings.backoff_base, settings.backoff_max)
                )
                delay = min(delay, settings.backoff_max)
                log.warning("%s %s: %s; retrying in %.1fs", self.name, call.description, exc, delay)
                self.sleep(delay)

    def close(self) -> None:  # noqa: B027 - optional hook; most providers hold nothing
        """Release connections."""


class HTTPProvider(PurgeProvider):
    """A provider speaking JSON over HTTP with httpx."""

    def __init__(
        self,
        settings: CDNSettings,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        import httpx

        super().__init__(settings, sleep)
        self.client = client or httpx.Client(timeout=settings.http_timeout)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; map rate limits, 5xx and network errors to retryable errors."""
        import httpx

        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"{method} {url}: {exc}") from exc
        if response.status_code == 429:
            raise RateLimited(f"{method} {url}: HTTP 429", parse_retry_after(response.headers))
        if response.status_code >= 500:
            raise BackendUnavailable(f"{method} {url}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise PurgeError(f"{method} {url}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    def close(self) -> None:
        self.client.close()


class CloudFrontProvider(PurgeProvider):
    """Amazon CloudFront ``CreateInvalidation`` through boto3 (``*`` only as the last character)."""

    name = "cloudfront"
    #: CloudFront accepts at most 3000 paths per invalidation batch.
    MAX_PATHS = 3000
    _RATE_LIMIT_CODES = {
        "TooManyInvalidationsInProgress",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }

    def __init__(self, settings: CDNSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(settings, sleep)
        import boto3
        from botocore.config import Config

        # One attempt per call: the backoff here owns retrying, so limits are not retried twice.
        self.client = boto3.client(
            "cloudfront",
            endpoint_url=settings.cloudfront_endpoint_url,
            region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def calls(self, paths: list[str]) -> list[PurgeCall]:
        widened: dict[str, list[str]] = {}
        for path in paths:
            widened.setdefault(widen_to_trailing_wildcard(path), []).append(path)
        return [
            PurgeCall(
                covers=tuple(p for w in batch for p in widened[w]),
                run=self._invalidate(batch),
                description=f"invalidation of {len(batch)} path(s)",
                widened=tuple(batch),
            )
            for batch in chunks(list(widened), self.MAX_PATHS)
        ]

    def _invalidate(self, batch: list[str]) -> Callable[[], None]:
        # One caller reference per batch, reused by retries: CloudFront then treats a retry of a
        # request that did land as the same invalidation instead of starting a second one.
        reference = f"sluice-{uuid.uuid4().hex}"

        def run() -> None:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                self.client.create_invalidation(
                    DistributionId=self.settings.cloudfront_distribution_id,
                    InvalidationBatch={
                        "Paths": {
                            "Quantity": len(batch),
                            "Items": [quote(p, safe="/*?=&") for p in batch],
                        },
                        "CallerReference": reference,
                    },
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code in self._RATE_LIMIT_CODES or status == 429:
                    raise RateLimited(f"CloudFront {code or status}") from exc
                if status >= 500:
                    raise BackendUnavailable(f"CloudFront {code}: {exc}") from exc
                raise PurgeError(f"CloudFront {code}: {exc}") from exc
            except BotoCoreError as exc:
                raise BackendUnavailable(f"CloudFront: {exc}") from exc

        return run


class CloudflareProvider(HTTPProvider):
    """Cloudflare ``POST /zones/{zone}/purge_cache``: files by URL, patterns by prefix or all."""

    name = "cloudflare"
    #: Cloudflare's per-request limit for ``files`` and ``prefixes`` on every plan.
    CHUNK = 30

    def calls(self, paths: list[str]) -> list[PurgeCall]:
        base = self.settings.base_url
        host = urlsplit(base).netloc + urlsplit(base).path.rstrip("/")
        if EVERYTHING in paths or (
            any(map(is_pattern, paths)) and not self.settings.cloudflare_prefix_purge
        ):
            # Without prefix purge (an Enterprise feature) a wildcard can only be honoured in full.
            return [
                self._call(tuple(paths), {"purge_everything": True}, "purge everything", EVERYTHING)
            ]
        files = [p for p in paths if not is_pattern(p)]
        prefixes: dict[str, list[str]] = {}
        for path in filter(is_pattern, paths):
            prefixes.setdefault(host + pattern_directory(path).rstrip("/"), []).append(path)
        planned = [
            self._call(tuple(batch), {"files": [base + p for p in batch]}, f"{len(batch)} file(s)")
            for batch in chunks(files, self.CHUNK)
        ]
        planned += [
            self._call(
                tuple(p for k in batch for p in prefixes[k]),
                {"prefixes": batch},
                f"{len(batch)} prefix(es)",
                *(pattern_directory(p) + "*" for k in batch for p in prefixes[k]),
            )
            for batch in chunks(list(prefixes), self.CHUNK)
        ]
        return planned

    def _call(
        self, covers: tuple[str, ...], body: dict[str, Any], description: str, *widened: str
    ) -> PurgeCall:
        url = f"{self.settings.cloudflare_api_url}/zones/{self.settings.cloudflare_zone_id}/purge_cache"
        headers = {"Authorization": f"Bearer {self.settings.cloudflare_api_token}"}

        def run() -> None:
            response = self.request("POST", url, json=body, headers=headers)
            payload = response.json()
            if not payload.get("success", False):
                raise PurgeError(f"Cloudflare refused the purge: {payload.get('errors')}")

        return PurgeCall(covers, run, description, widened)


class FastlyProvider(HTTPProvider):
    """Fastly: single-URL purge for exact paths, surrogate-key purge for patterns, purge_all for ``/*``."""

    name = "fastly"
    #: Fastly accepts up to 256 surrogate keys per batch purge.
    KEYS_PER_CALL = 256

    def calls(self, paths: list[str]) -> list[PurgeCall]:
        service = f"{self.settings.fastly_api_url}/service/{self.settings.fastly_service_id}"
        keys: dict[str, list[str]] = {}
        everything = EVERYTHING in paths
        for path in filter(is_pattern, paths):
            key = surrogate_key_for_pattern(path)
            if key is None:
                everything = True
            else:
                keys.setdefault(key, []).append(path)
        if everything:
            return [
                self._call(
                    tuple(paths), "POST", f"{service}/purge_all", {}, "purge all", EVERYTHING
                )
            ]
        host = urlsplit(self.settings.base_url).netloc
        planned = []
        for path in (p for p in paths if not is_pattern(p)):
            if host:
                planned.append(
                    self._call(
                        (path,),
                        "POST",
                        f"{self.settings.fastly_api_url}/purge/{host}{quote(path, safe='/?=&')}",
                        {},
                        f"URL {path}",
                    )
                )
            else:  # no public host known: the path is its own surrogate key
                keys.setdefault(path, []).append(path)
        for batch in chunks(list(keys), self.KEYS_PER_CALL):
            planned.append(
                self._call(
                    tuple(p for k in batch for p in keys[k]),
                    "POST",
                    f"{service}/purge",
                    {"Surrogate-Key": " ".join(batch)},
                    f"{len(batch)} surrogate key(s)",
                    # a directory's key is on every response below it
                    *(key + "*" if key.endswith("/") else key for key in batch),
                )
            )
        return planned

    def _call(
        self,
        covers: tuple[str, ...],
        method: str,
        url: str,
        headers: dict[str, str],
        description: str,
        *widened: str,
    ) -> PurgeCall:
        headers = {
            "Fastly-Key": self.settings.fastly_api_token,
            "Accept": "application/json",
            **headers,
        }

        def run() -> None:
            self.request(method, url, headers=headers)

        return PurgeCall(covers, run, description, widened)


class WebhookProvider(HTTPProvider):
    """A generic HTTP endpoint: ``POST {"paths": [...]}`` (the guide's purge ``curl``).

    With ``SLUICE_CDN_WEBHOOK_SECRET`` set, the body is signed: ``X-Sluice-Signature:
    sha256=<HMAC-SHA256 of the body>`` so the receiver can reject forged purges.
    """

    name = "webhook"
    CHUNK = 1000

    def calls(self, paths: list[str]) -> list[PurgeCall]:
        return [
            PurgeCall(tuple(batch), self._post(batch), f"{len(batch)} path(s)")
            for batch in chunks(paths, self.CHUNK)
        ]

    def _post(self, batch: list[str]) -> Callable[[], None]:
        body = json.dumps({"paths": batch}).encode()
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            digest = hmac.new(
                self.settings.webhook_secret.encode(), body, hashlib.sha256
            ).hexdigest()
            headers["X-Sluice-Signature"] = f"sha256={digest}"

        def run() -> None:
            self.request("POST", self.settings.webhook_url, content=body, headers=headers)

        return run


_PROVIDERS: dict[str, type[PurgeProvider]] = {
    "cloudfront": CloudFrontProvider,
    "cloudflare": CloudflareProvider,
    "fastly": FastlyProvider,
    "webhook": WebhookProvider,
}


def build_provider(
    settings: CDNSettings, sleep: Callable[[float], None] = time.sleep
) -> PurgeProvider:
    """The provider ``SLUICE_CDN_PROVIDER`` names; :class:`ConfigurationError` when it is ``none``."""
    kind = _PROVIDERS.get(settings.provider)
    if kind is None:
        raise ConfigurationError(
            "no CDN purge provider configured; set SLUICE_CDN_PROVIDER to cloudfront, cloudflare, "
            "fastly or webhook"
        )
    return kind(settings, sleep=sleep)
