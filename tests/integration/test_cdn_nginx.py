"""The generated nginx configuration: `nginx -t`, then real serving on loopback."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.cdn.compression import ResourceCompressor
from sluice.cdn.nginx import (
    NginxOptions,
    check_config,
    find_brotli_module,
    render_main_config,
    render_server_config,
)
from sluice.cdn.versioning import ResourceVersioner

pytestmark = pytest.mark.integration
REQUIRE = os.environ.get("SLUICE_REQUIRE_SERVICES") == "1"
JS = b"export const greet = (name) => `hello ${name}`;\n" * 300


def _require(what: str, found: object) -> None:
    if found:
        return
    reason = f"{what} is not installed (apt-get install nginx libnginx-mod-http-brotli-static)"
    if REQUIRE:
        pytest.fail(f"SLUICE_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    _require("nginx", binary)
    _require("the nginx brotli_static module", find_brotli_module())
    return str(binary)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    src = tmp_path / "src"
    (src / "js").mkdir(parents=True)
    (src / "js/app.js").write_bytes(JS)
    (src / "css").mkdir()
    (src / "css/site.css").write_text("body { background: url(../img/logo.png) }\n" * 50)
    (src / "img").mkdir()
    (src / "img/logo.png").write_bytes(b"\x89PNG" + os.urandom(2000))
    (src / "index.html").write_text("<!doctype html><title>x</title>" * 50)
    dist = tmp_path / "dist"
    manifest = ResourceVersioner(style="filename").build(src, dist)
    ResourceCompressor(workers=1).compress_tree(dist)
    return dist, manifest.paths


@pytest.fixture
def server(
    nginx_binary: str, built: tuple[Path, dict[str, str]], tmp_path: Path
) -> Iterator[tuple[int, Path]]:
    dist, _ = built
    port = _free_port()
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    options = NginxOptions(
        root=dist, listen=f"127.0.0.1:{port}", access_log=str(prefix / "access.log")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(render_main_config(render_server_config(options), prefix, find_brotli_module()))
    process = subprocess.Popen(
        [nginx_binary, "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"nginx did not start: {process.communicate()[1]!r}") from None
            time.sleep(0.05)
    yield port, prefix
    process.terminate()
    process.wait(10)


def get(port: int, path: str, accept_encoding: str | None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding is not None else {}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_nginx_accepts_generated_config(nginx_binary: str, tmp_path: Path) -> None:
    config = render_server_config(
        NginxOptions(root=tmp_path, listen="127.0.0.1:1", access_log=str(tmp_path / "a.log"))
    )
    ok, output = check_config(config, nginx_binary)
    assert ok, output
    broken = config.replace("gzip_static on;", "gzip_static maybe;")
    assert check_config(broken, nginx_binary)[0] is False


@pytest.mark.parametrize(
    ("accept", "encoding", "suffix"),
    [("br, gzip", "br", ".br"), ("gzip", "gzip", ".gz"), (None, None, ""), ("identity", None, "")],
)
def test_serves_negotiated_copies(
    server: tuple[int, Path],
    built: tuple[Path, dict[str, str]],
    accept: str | None,
    encoding: str | None,
    suffix: str,
) -> None:
    port, _ = server
    dist, _ = built
    status, headers, body = get(port, "/static/js/app.js", accept)
    assert status == 200
    assert body == (dist / f"js/app.js{suffix}").read_bytes()
    assert headers.get("content-encoding") == encoding
    assert headers["vary"] == "Accept-Encoding"
    assert headers["cache-control"] == "public, max-age=31536000"  # unversioned: never immutable
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["surrogate-key"].split()[:2] == ["/static/js/app.js", "/static/"]


def test_etags_differ_per_encoding(server: tuple[int, Path]) -> None:
    port, _ = server
    tags = {
        enc: get(port, "/static/js/app.js", enc)[1]["etag"] for enc in ("br", "gzip", "identity")
    }
    assert len(set(tags.values())) == 3


def test_versioned_urls_are_immutable(
    server: tuple[int, Path], built: tuple[Path, dict[str, str]]
) -> None:
    port, _ = server
    _, paths = built
    hashed = paths["js/app.js"]
    assert (
        get(port, f"/static/{hashed}", "br")[1]["cache-control"]
        == "public, max-age=31536000, immutable"
    )
    assert get(port, "/static/js/app.js?v=0123456789ab", "br")[1]["cache-control"].endswith(
        "immutable"
    )


def test_types_and_hidden_files(server: tuple[int, Path]) -> None:
    port, prefix = server
    status, png, _ = get(port, "/static/img/logo.png", "br, gzip")
    assert status == 200 and png["cache-control"] == "public, max-age=2592000"
    assert "vary" not in png and "content-encoding" not in png
    _, html, _ = get(port, "/static/index.html", "gzip")
    assert html["cache-control"] == "public, max-age=0, s-maxage=3600, must-revalidate"
    assert html["surrogate-control"] == "max-age=3600" and html["content-encoding"] == "gzip"
    assert get(port, "/static/.sluice-compress.json", None)[0] == 404
    assert get(port, "/static/../etc/passwd", None)[0] in {400, 404}
    log = (prefix / "access.log").read_text()
    assert "cache=-" in log and "enc=gzip" in log and "enc=-" in log


def test_refused_gzip_is_honoured(
    server: tuple[int, Path], built: tuple[Path, dict[str, str]]
) -> None:
    port, _ = server
    dist, _ = built
    status, headers, body = get(port, "/static/js/app.js", "gzip;q=0")
    assert (
        status == 200
        and "content-encoding" not in headers
        and body == (dist / "js/app.js").read_bytes()
    )


INJECTIONS = [
    '/s/ { return 200 "injected"; } location /x/',
    "/s/;/",
    "/s$uri/",
    "/s/\n/",
    "/s /",
    '/s"/',
    "/s'/",
    "/s{/",
    "/s\\/",
    "/s#/",
]


@pytest.mark.parametrize("static_url", INJECTIONS)
def test_static_url_that_could_inject_is_refused_by_generator_and_settings(
    static_url: str, tmp_path: Path
) -> None:
    from sluice.errors import ConfigurationError, InvalidInput
    from sluice.settings import load_cdn_settings

    with pytest.raises(InvalidInput, match="static URL"):
        render_server_config(NginxOptions(root=tmp_path, static_url=static_url))
    with pytest.raises(ConfigurationError, match="SLUICE_CDN_STATIC_URL"):
        load_cdn_settings({"SLUICE_CDN_STATIC_URL": static_url})


@pytest.mark.parametrize(
    "name", ["a$b", "$document_root", 'a"b', "a\\b", "a\nb", "a\x7fb", "a\x00b"]
)
def test_root_nginx_would_expand_is_refused_by_generator_and_settings(
    name: str, tmp_path: Path
) -> None:
    from sluice.errors import ConfigurationError, InvalidInput
    from sluice.settings import load_cdn_settings

    root = tmp_path / name
    with pytest.raises(InvalidInput, match=r"nginx configuration|not a usable path"):
        render_server_config(NginxOptions(root=root))
    with pytest.raises(ConfigurationError, match="SLUICE_CDN_STATIC_ROOT"):
        load_cdn_settings({"SLUICE_CDN_STATIC_ROOT": str(root)})


@pytest.mark.parametrize("name", ["with space", "semi;colon", "brace{}", "at@sign", "ünï"])
def test_literal_roots_and_prefixes_pass_nginx_t_and_mean_themselves(
    nginx_binary: str, tmp_path: Path, name: str
) -> None:
    """What the generator accepts, nginx accepts too, and reads as the literal path."""
    root = tmp_path / name
    root.mkdir()
    config = render_server_config(
        NginxOptions(root=root, static_url="/st-at.ic~1/v2/", listen="127.0.0.1:8081")
    )
    ok, output = check_config(config, nginx_binary)
    assert ok, output
    assert f'alias "{root.resolve()}/";' in config
    assert 'location ^~ "/st-at.ic~1/v2/" {' in config
