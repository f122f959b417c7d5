"""Each purge provider against a loopback server speaking its API (moto's server for CloudFront).

The servers check what the real APIs check (auth header, body shape, per-request limits) and can
be told to answer 429 / TooManyInvalidationsInProgress / 503 first, to exercise backoff and
re-queueing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.cdn.config import load_cdn_settings
from sluice.cdn.manager import CDNManager
from sluice.store import DiskStore

pytestmark = pytest.mark.integration

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeAPI:
    """A loopback HTTP server: ``handler`` answers; ``script`` overrides the next answers."""

    handler: Callable[[Request], Reply]
    requests: list[Request] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)
    url: str = ""

    def serve(self) -> Iterator[FakeAPI]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                api.requests.append(request)
                status, headers, payload = api.script.pop(0) if api.script else api.handler(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield self
        server.shutdown()
        server.server_close()


def reply(status: int, body: Any, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


def manager(tmp_path: Path, **env: str) -> CDNManager:
    base = {
        "SLUICE_CDN_BACKOFF_BASE": "0.01",
        "SLUICE_CDN_MAX_RETRIES": "3",
        "SLUICE_CDN_WILDCARD_THRESHOLD": "40",
    }
    return CDNManager(load_cdn_settings({**base, **env}), store=DiskStore(tmp_path / "store"))


# -- Cloudflare ------------------------------------------------------------------------------------

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


def cloudflare_handler(request: Request) -> Reply:
    if request.headers.get("authorization") != "Bearer cf-token":
        return reply(
            403, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}
        )
    if request.path != f"/client/v4/zones/{ZONE}/purge_cache":
        return reply(404, {"success": False, "errors": [{"code": 7003, "message": "No route"}]})
    body = request.json()
    keys = set(body) & {"files", "prefixes", "purge_everything", "tags", "hosts"}
    too_many = any(len(body.get(k, [])) > 30 for k in ("files", "prefixes"))
    if len(keys) != 1 or too_many:
        return reply(
            400,
            {
                "success": False,
                "errors": [{"code": 1012, "message": "Request must contain one of..."}],
            },
        )
    return reply(200, {"success": True, "errors": [], "messages": [], "result": {"id": ZONE}})


@pytest.fixture
def cloudflare() -> Iterator[FakeAPI]:
    yield from FakeAPI(cloudflare_handler).serve()


def cloudflare_manager(tmp_path: Path, api: FakeAPI, **env: str) -> CDNManager:
    defaults = {"SLUICE_CDN_CLOUDFLARE_API_TOKEN": "cf-token"}
    return manager(
        tmp_path,
        SLUICE_CDN_PROVIDER="cloudflare",
        SLUICE_CDN_CLOUDFLARE_ZONE_ID=ZONE,
        SLUICE_CDN_CLOUDFLARE_API_URL=f"{api.url}/client/v4",
        SLUICE_CDN_BASE_URL="https://cdn.example.com",
        **{**defaults, **env},
    )


def test_cloudflare_files_in_chunks_and_prefixes(tmp_path: Path, cloudflare: FakeAPI) -> None:
    cdn = cloudflare_manager(tmp_path, cloudflare, SLUICE_CDN_CLOUDFLARE_PREFIX_PURGE="true")
    files = [f"/static/d{i % 3}/f{i}.js" for i in range(70)]
    cdn.queue_invalidation([*files, "/static/js/app.*.js"])
    result = cdn.flush_invalidations()
    assert result.error is None and cdn.get_pending_invalidations() == []
    bodies = [r.json() for r in cloudflare.requests]
    sent = [url for b in bodies for url in b.get("files", [])]
    assert sorted(sent) == sorted(f"https://cdn.example.com{p}" for p in files)
    assert all(len(b.get("files", [])) <= 30 for b in bodies)
    assert {"prefixes": ["cdn.example.com/static/js"]} in bodies


def test_cloudflare_wildcard_without_prefix_purge_purges_everything(
    tmp_path: Path, cloudflare: FakeAPI
) -> None:
    cdn = cloudflare_manager(tmp_path, cloudflare)
    cdn.queue_invalidation(["/a.js", "/static/*.css"])
    cdn.flush_invalidations()
    assert [r.json() for r in cloudflare.requests] == [{"purge_everything": True}]


def test_cloudflare_429_backs_off_then_succeeds(tmp_path: Path, cloudflare: FakeAPI) -> None:
    cloudflare.script = [reply(429, {"success": False}, **{"Retry-After": "0"})] * 2
    cdn = cloudflare_manager(tmp_path, cloudflare)
    cdn.queue_invalidation(["/a.js"])
    result = cdn.flush_invalidations()
    assert result.error is None and result.purged == ["/a.js"]
    assert len(cloudflare.requests) == 3


def test_cloudflare_outage_requeues_then_recovers(tmp_path: Path, cloudflare: FakeAPI) -> None:
    cloudflare.script = [reply(503, {"success": False})] * 4  # first try + 3 retries
    cdn = cloudflare_manager(tmp_path, cloudflare)
    cdn.queue_invalidation(["/a.js", "/b.js"])
    failed = cdn.flush_invalidations()
    assert failed.error and failed.requeued == ["/a.js", "/b.js"]
    assert cdn.get_pending_invalidations() == ["/a.js", "/b.js"]
    assert cdn.flush_invalidations().purged == ["/a.js", "/b.js"]
    assert cdn.get_pending_invalidations() == []


def test_cloudflare_bad_token_is_not_retried_but_kept(tmp_path: Path, cloudflare: FakeAPI) -> None:
    cdn = cloudflare_manager(tmp_path, cloudflare, SLUICE_CDN_CLOUDFLARE_API_TOKEN="wrong")
    cdn.queue_invalidation(["/a.js"])
    result = cdn.flush_invalidations()
    assert result.error and "403" in result.error and len(cloudflare.requests) == 1
    assert cdn.get_pending_invalidations() == ["/a.js"]


# -- Fastly ----------------------------------------------------------------------------------------

SERVICE = "SU1Z0isxPaozGVKXdv0eY"


def fastly_handler(request: Request) -> Reply:
    if request.headers.get("fastly-key") != "fastly-token":
        return reply(401, {"msg": "Provided credentials are missing or invalid"})
    if request.path.startswith("/purge/"):
        return reply(200, {"status": "ok", "id": "1-url"})
    if request.path == f"/service/{SERVICE}/purge":
        keys = request.headers.get("surrogate-key", "").split()
        if not keys or len(keys) > 256:
            return reply(400, {"msg": "bad surrogate keys"})
        return reply(200, {k: f"id-{k}" for k in keys})
    if request.path == f"/service/{SERVICE}/purge_all":
        return reply(200, {"status": "ok"})
    return reply(404, {"msg": "Record not found"})


@pytest.fixture
def fastly() -> Iterator[FakeAPI]:
    yield from FakeAPI(fastly_handler).serve()


def fastly_manager(tmp_path: Path, api: FakeAPI) -> CDNManager:
    return manager(
        tmp_path,
        SLUICE_CDN_PROVIDER="fastly",
        SLUICE_CDN_FASTLY_SERVICE_ID=SERVICE,
        SLUICE_CDN_FASTLY_API_TOKEN="fastly-token",
        SLUICE_CDN_FASTLY_API_URL=api.url,
        SLUICE_CDN_BASE_URL="https://www.example.com",
    )


def test_fastly_url_and_surrogate_key_purges(tmp_path: Path, fastly: FakeAPI) -> None:
    cdn = fastly_manager(tmp_path, fastly)
    cdn.queue_invalidation(["/static/a.js", "/static/js/app.*.js", "/static/css/*.css"])
    fastly.script = [reply(429, {"msg": "rate"}, **{"Retry-After": "0"})]
    result = cdn.flush_invalidations()
    assert result.error is None
    paths = [r.path for r in fastly.requests]
    assert paths.count("/purge/www.example.com/static/a.js") == 2  # 429, then success
    key_purge = next(r for r in fastly.requests if r.path.endswith("/purge"))
    assert key_purge.headers["surrogate-key"].split() == ["/static/js/", "/static/css/"]


def test_fastly_everything(tmp_path: Path, fastly: FakeAPI) -> None:
    cdn = fastly_manager(tmp_path, fastly)
    cdn.invalidate_all()
    cdn.flush_invalidations()
    assert [r.path for r in fastly.requests] == [f"/service/{SERVICE}/purge_all"]


# -- webhook ---------------------------------------------------------------------------------------


def webhook_handler(request: Request) -> Reply:
    expected = "sha256=" + hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(request.headers.get("x-sluice-signature", ""), expected):
        return reply(401, {"error": "bad signature"})
    return reply(202, {"accepted": len(request.json()["paths"])})


@pytest.fixture
def webhook() -> Iterator[FakeAPI]:
    yield from FakeAPI(webhook_handler).serve()


def test_webhook_signed_post(tmp_path: Path, webhook: FakeAPI) -> None:
    cdn = manager(
        tmp_path,
        SLUICE_CDN_PROVIDER="webhook",
        SLUICE_CDN_WEBHOOK_URL=f"{webhook.url}/purge",
        SLUICE_CDN_WEBHOOK_SECRET="s3cret",
    )
    cdn.queue_invalidation(["/static/js/app.*.js"])
    cdn.invalidate_all()
    webhook.script = [reply(429, {}, **{"Retry-After": "0"})]
    result = cdn.flush_invalidations()
    assert result.error is None
    assert webhook.requests[-1].json() == {"paths": ["/*"]}  # '/*' subsumes the rest


def test_webhook_wrong_secret_keeps_paths(tmp_path: Path, webhook: FakeAPI) -> None:
    cdn = manager(
        tmp_path,
        SLUICE_CDN_PROVIDER="webhook",
        SLUICE_CDN_WEBHOOK_URL=f"{webhook.url}/purge",
        SLUICE_CDN_WEBHOOK_SECRET="wrong",
    )
    cdn.queue_invalidation(["/a.js"])
    assert cdn.flush_invalidations().requeued == ["/a.js"]


def test_unreachable_endpoint_requeues(tmp_path: Path) -> None:
    cdn = manager(
        tmp_path,
        SLUICE_CDN_PROVIDER="webhook",
        SLUICE_CDN_WEBHOOK_URL="http://127.0.0.1:9/purge",
        SLUICE_CDN_MAX_RETRIES="1",
    )
    cdn.queue_invalidation(["/a.js"])
    result = cdn.flush_invalidations()
    assert result.error and cdn.get_pending_invalidations() == ["/a.js"]


# -- CloudFront (moto) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def create_distribution(endpoint: str) -> str:
    import boto3

    client = boto3.client("cloudfront", endpoint_url=endpoint, region_name="us-east-1")
    origin = {
        "Id": "origin",
        "DomainName": "origin.example.com",
        "CustomOriginConfig": {
            "HTTPPort": 80,
            "HTTPSPort": 443,
            "OriginProtocolPolicy": "https-only",
        },
    }
    config = {
        "CallerReference": uuid.uuid4().hex,
        "Comment": "",
        "Enabled": True,
        "Origins": {"Quantity": 1, "Items": [origin]},
        "DefaultCacheBehavior": {
            "TargetOriginId": "origin",
            "ViewerProtocolPolicy": "allow-all",
            "MinTTL": 0,
            "ForwardedValues": {"QueryString": True, "Cookies": {"Forward": "none"}},
            "TrustedSigners": {"Enabled": False, "Quantity": 0},
        },
    }
    return str(client.create_distribution(DistributionConfig=config)["Distribution"]["Id"])


def invalidated_paths(endpoint: str, distribution: str) -> list[list[str]]:
    import boto3

    client = boto3.client("cloudfront", endpoint_url=endpoint, region_name="us-east-1")
    items = client.list_invalidations(DistributionId=distribution)["InvalidationList"].get(
        "Items", []
    )
    return [
        client.get_invalidation(DistributionId=distribution, Id=i["Id"])["Invalidation"][
            "InvalidationBatch"
        ]["Paths"].get("Items", [])
        for i in items
    ]


def test_cloudfront_invalidation_widens_patterns(
    tmp_path: Path, moto_url: str, aws_env: None
) -> None:
    distribution = create_distribution(moto_url)
    cdn = manager(
        tmp_path,
        SLUICE_CDN_PROVIDER="cloudfront",
        SLUICE_CDN_CLOUDFRONT_DISTRIBUTION_ID=distribution,
        SLUICE_CDN_CLOUDFRONT_ENDPOINT_URL=moto_url,
    )
    cdn.queue_invalidation(["/static/js/app.*.js", "/static/css/styles.*.css", "/index.html"])
    result = cdn.flush_invalidations()
    assert result.error is None and result.calls == 1
    assert sorted(invalidated_paths(moto_url, distribution)[0]) == [
        "/index.html",
        "/static/css/styles.*",
        "/static/js/app.*",
    ]


class TooManyInProgress:
    """A proxy in front of moto that first answers TooManyInvalidationsInProgress."""

    BODY = (
        b'<?xml version="1.0"?><ErrorResponse xmlns="http://cloudfront.amazonaws.com/doc/2020-05-31/">'
        b"<Error><Type>Sender</Type><Code>TooManyInvalidationsInProgress</Code>"
        b"<Message>Processing your request will cause you to exceed the maximum number of in-progress "
        b"wildcard invalidations.</Message></Error><RequestId>x</RequestId></ErrorResponse>"
    )

    def __init__(self, upstream: str, refusals: int) -> None:
        self.upstream = upstream
        self.refusals = refusals

    def __call__(self, request: Request) -> Reply:
        if self.refusals:
            self.refusals -= 1
            return 400, {"Content-Type": "text/xml"}, self.BODY
        forwarded = {
            k: v for k, v in request.headers.items() if k not in {"host", "content-length"}
        }
        response = httpx.post(self.upstream + request.path, content=request.body, headers=forwarded)
        return (
            response.status_code,
            {"Content-Type": response.headers.get("content-type", "text/xml")},
            response.content,
        )


def test_cloudfront_too_many_in_progress_backs_off(
    tmp_path: Path, moto_url: str, aws_env: None
) -> None:
    distribution = create_distribution(moto_url)
    proxy = TooManyInProgress(moto_url, refusals=2)
    for api in FakeAPI(proxy).serve():
        cdn = manager(
            tmp_path,
            SLUICE_CDN_PROVIDER="cloudfront",
            SLUICE_CDN_CLOUDFRONT_DISTRIBUTION_ID=distribution,
            SLUICE_CDN_CLOUDFRONT_ENDPOINT_URL=api.url,
        )
        cdn.queue_invalidation(["/static/*"])
        result = cdn.flush_invalidations()
        assert result.error is None and len(api.requests) == 3
    assert invalidated_paths(moto_url, distribution) == [["/static/*"]]


def test_cloudfront_exhausted_retries_requeue(tmp_path: Path, moto_url: str, aws_env: None) -> None:
    distribution = create_distribution(moto_url)
    for api in FakeAPI(TooManyInProgress(moto_url, refusals=10)).serve():
        cdn = manager(
            tmp_path,
            SLUICE_CDN_PROVIDER="cloudfront",
            SLUICE_CDN_CLOUDFRONT_DISTRIBUTION_ID=distribution,
            SLUICE_CDN_CLOUDFRONT_ENDPOINT_URL=api.url,
            SLUICE_CDN_MAX_RETRIES="1",
        )
        cdn.queue_invalidation(["/static/*"])
        result = cdn.flush_invalidations()
        assert result.error and "TooManyInvalidationsInProgress" in result.error
        assert cdn.get_pending_invalidations() == ["/static/*"]
    assert invalidated_paths(moto_url, distribution) == []


# -- one flush, several batches -------------------------------------------------------------------


def test_cloudflare_purges_everything_once_per_flush_however_many_batches(
    tmp_path: Path, cloudflare: FakeAPI
) -> None:
    """Without prefix purge a wildcard is a purge of everything; batch by batch, it was sent once
    per batch (10 identical purges for 10 batches)."""
    cdn = cloudflare_manager(tmp_path, cloudflare, SLUICE_CDN_FLUSH_BATCH="10")
    cdn.queue_invalidation(["/static/css/*", *(f"/static/js/{i}.js" for i in range(100))])
    result = cdn.flush_invalidations()
    assert result.error is None and cdn.get_pending_invalidations() == []
    assert [r.json() for r in cloudflare.requests] == [{"purge_everything": True}]


def test_fastly_directory_key_purged_once_per_flush(tmp_path: Path, fastly: FakeAPI) -> None:
    cdn = fastly_manager(tmp_path, fastly)
    cdn.queue_invalidation([f"/static/js/app.{i}.*.js" for i in range(30)])
    cdn.invalidations.batch = 3
    cdn.flush_invalidations()
    keys = [r.headers["surrogate-key"] for r in fastly.requests if r.path.endswith("/purge")]
    assert keys == ["/static/js/"]
