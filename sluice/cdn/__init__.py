"""Static resources for a CDN (guide section 4).

``from sluice.cdn import get_cdn_manager`` gives the guide's ``cdn`` object: versioned URLs,
negotiated compression, nginx configuration and a durable purge queue flushed by beat tasks.

Names are loaded on first use (PEP 562): every Celery process imports :mod:`sluice.cdn.tasks`, and
only the few that run a CDN task need the manager, compression and providers behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.lazy import lazy_exports

if TYPE_CHECKING:
    from sluice.cdn.compression import ResourceCompressor
    from sluice.cdn.config import CDNSettings
    from sluice.cdn.hitratio import read_edge_hit_ratio
    from sluice.cdn.manager import CDNManager, get_cdn_manager, reset_cdn_manager
    from sluice.cdn.policies import RESOURCE_TYPES, CachePolicy, PolicyTable
    from sluice.cdn.providers import PurgeFailed
    from sluice.cdn.versioning import ResourceVersioner

_HOMES = {
    "CDNManager": "manager",
    "CDNSettings": "config",
    "CachePolicy": "policies",
    "PolicyTable": "policies",
    "PurgeFailed": "providers",
    "RESOURCE_TYPES": "policies",
    "ResourceCompressor": "compression",
    "ResourceVersioner": "versioning",
    "get_cdn_manager": "manager",
    "read_edge_hit_ratio": "hitratio",
    "reset_cdn_manager": "manager",
}

__all__ = [  # noqa: RUF022 - grouped by purpose, as the docs present them
    # the guide's cdn object
    "get_cdn_manager",
    "reset_cdn_manager",
    "CDNManager",
    "CDNSettings",
    # policies, versions, compression
    "CachePolicy",
    "PolicyTable",
    "RESOURCE_TYPES",
    "ResourceVersioner",
    "ResourceCompressor",
    # the edge
    "read_edge_hit_ratio",
    "PurgeFailed",
]

__getattr__ = lazy_exports(__name__, _HOMES)
