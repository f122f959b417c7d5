"""Static resources for a CDN (guide section 4).

``from sluice.cdn import get_cdn_manager`` gives the guide's ``cdn`` object: versioned URLs,
negotiated compression, nginx configuration and a durable purge queue flushed by beat tasks.
"""

from sluice.cdn.compression import ResourceCompressor
from sluice.cdn.config import CDNSettings
from sluice.cdn.hitratio import read_edge_hit_ratio
from sluice.cdn.manager import CDNManager, get_cdn_manager, reset_cdn_manager
from sluice.cdn.policies import RESOURCE_TYPES, CachePolicy, PolicyTable
from sluice.cdn.providers import PurgeFailed
from sluice.cdn.versioning import ResourceVersioner

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
