"""Edge hit ratio from CloudFront standard logs and sluice's nginx log format."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from sluice.cdn.hitratio import EdgeLogScanner, count_lines, read_edge_hit_ratio
from sluice.store import DiskStore

FIELDS = (
    b"date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) "
    b"cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id"
)
ROW = (
    b"2024-01-01\t00:00:01\tFRA56-C1\t100\t1.2.3.4\tGET\td.cloudfront.net\t/static/a.js\t200"
    b"\t-\tUA\t-\t-\t%s\tid\n"
)
CLOUDFRONT = (
    b"#Version: 1.0\n#Fields: "
    + FIELDS
    + b"\n"
    + b"".join(ROW % result for result in (b"Hit", b"Miss", b"RefreshHit", b"Error"))
)


def nginx_line(cache: str) -> bytes:
    return (
        f'2024-01-01T00:00:00+00:00 127.0.0.1 "GET /static/a.js HTTP/1.1" 200 10 rt=0.000 '
        f"enc=br cache={cache}\n"
    ).encode()


def test_count_both_formats() -> None:
    cf = count_lines(CLOUDFRONT.splitlines(keepends=True))
    assert (cf.hits, cf.misses, cf.ratio) == (2, 1, pytest.approx(2 / 3))
    lines = [nginx_line(c) for c in ("HIT", "MISS", "STALE", "-", "EXPIRED", "REVALIDATED")]
    ng = count_lines(lines)
    assert (ng.hits, ng.misses) == (3, 2)
    assert count_lines([]).ratio is None


def test_scanner_is_incremental_and_handles_rotation(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "store")
    log = tmp_path / "access.log"
    log.write_bytes(nginx_line("HIT") + nginx_line("MISS") + b"partial line cache=HI")
    (tmp_path / "cf.gz").write_bytes(gzip.compress(CLOUDFRONT))
    scanner = EdgeLogScanner(store)
    patterns = [str(tmp_path / "*.log"), str(tmp_path / "*.gz")]
    first = scanner.scan(patterns)
    assert (first.hits, first.misses) == (1 + 2, 1 + 1)
    assert scanner.scan(patterns) == first  # nothing new: nothing counted twice
    with log.open("ab") as f:
        f.write(b"T\n" + nginx_line("HIT"))  # completes the partial line (a hit), plus one more
    assert scanner.scan(patterns).hits == 5
    log.unlink()
    log.write_bytes(nginx_line("MISS"))  # rotated: a new inode under the same name
    final = scanner.scan(patterns)
    assert (final.hits, final.misses) == (5, 3)
    stored = read_edge_hit_ratio(store)
    assert stored is not None and stored["ratio"] == pytest.approx(5 / 8)
