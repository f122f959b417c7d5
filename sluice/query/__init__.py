"""Query optimization (guide section 3): result caching, slow-query analysis, index advice.

``QueryOptimizer(engine)`` hooks a SQLAlchemy engine (sync or async, PostgreSQL or SQLite): every
statement is fingerprinted and timed, every write invalidates cached results through table versions
in the shared store (so across every Celery worker), reaching what depends on the written tables
through a dependency map read from the catalog, slow statements are explained, and index
candidates are validated with HypoPG where it is installed.
"""

from sluice.query.dependencies import DependencyMap
from sluice.query.errors import QueryExecutionError, QueryParameterError
from sluice.query.index_advisor import IndexAnalyzer
from sluice.query.normalizer import QueryNormalizer
from sluice.query.optimizer import QueryOptimizer
from sluice.query.parse_cache import ByteBudgetCache
from sluice.query.result_cache import QueryResultCache
from sluice.query.slow_queries import SlowQueryAnalyzer
from sluice.query.tracking import WriteTracker

__all__ = [  # noqa: RUF022 - grouped by purpose, as the docs present them
    # the guide's optimizer
    "QueryOptimizer",
    # its parts
    "QueryNormalizer",
    "ByteBudgetCache",
    "QueryResultCache",
    "DependencyMap",
    "WriteTracker",
    "SlowQueryAnalyzer",
    "IndexAnalyzer",
    # errors
    "QueryExecutionError",
    "QueryParameterError",
]
