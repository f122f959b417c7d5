"""Static resources for a CDN (guide section 4).

``from sluice.cdn import get_cdn_manager`` gives the guide's ``cdn`` object: versioned URLs,
negotiated compression, nginx configuration and a durable purge queue flushed by beat tasks.
"""

from sluice.cdn.compression import CompressionReport, ResourceCompressor, compress_bytes
from sluice.cdn.config import CDNSettings, get_cdn_settings, load_cdn_settings
from sluice.cdn.hitratio import EdgeLogScanner, EdgeStats, count_lines, read_edge_hit_ratio
from sluice.cdn.invalidation import FlushResult, InvalidationQueue
from sluice.cdn.manager import BuildResult, CDNManager, get_cdn_manager, reset_cdn_manager
from sluice.cdn.negotiation import choose_encoding, parse_accept_encoding
from sluice.cdn.nginx import NginxOptions, check_config, render_main_config, render_server_config
from sluice.cdn.policies import RESOURCE_TYPES, CachePolicy, PolicyTable, ResourceType
from sluice.cdn.providers import (
    CloudflareProvider,
    CloudFrontProvider,
    FastlyProvider,
    PurgeFailed,
    PurgeProvider,
    RateLimited,
    WebhookProvider,
    build_provider,
)
from sluice.cdn.purgepaths import collapse, validate_purge_path
from sluice.cdn.versioning import Manifest, MissingReference, ResourceVersioner

__all__ = [
    "RESOURCE_TYPES",
    "BuildResult",
    "CDNManager",
    "CDNSettings",
    "CachePolicy",
    "CloudFrontProvider",
    "CloudflareProvider",
    "CompressionReport",
    "EdgeLogScanner",
    "EdgeStats",
    "FastlyProvider",
    "FlushResult",
    "InvalidationQueue",
    "Manifest",
    "MissingReference",
    "NginxOptions",
    "PolicyTable",
    "PurgeFailed",
    "PurgeProvider",
    "RateLimited",
    "ResourceCompressor",
    "ResourceType",
    "ResourceVersioner",
    "WebhookProvider",
    "build_provider",
    "check_config",
    "choose_encoding",
    "collapse",
    "compress_bytes",
    "count_lines",
    "get_cdn_manager",
    "get_cdn_settings",
    "load_cdn_settings",
    "parse_accept_encoding",
    "read_edge_hit_ratio",
    "render_main_config",
    "render_server_config",
    "reset_cdn_manager",
    "validate_purge_path",
]
