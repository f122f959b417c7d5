"""Query optimization (guide section 3): result caching, slow-query analysis, index advice.

``QueryOptimizer(engine)`` hooks a SQLAlchemy engine (sync or async, PostgreSQL or SQLite): every
statement is fingerprinted and timed, every write invalidates cached results through table versions
in the shared store (so across every Celery worker), reaching what depends on the written tables
through a dependency map read from the catalog, slow statements are explained, and index
candidates are validated with HypoPG where it is installed.
"""

from sluice.query.columns import ColumnUse, column_uses
from sluice.query.dependencies import DependencyMap
from sluice.query.errors import QueryExecutionError, QueryParameterError
from sluice.query.index_advisor import IndexAnalyzer, IndexCandidate, QuerySample
from sluice.query.normalizer import QueryNormalizer, QueryShape
from sluice.query.optimizer import QueryOptimizer, database_namespace
from sluice.query.parse_cache import ByteBudgetCache
from sluice.query.plans import Plan, PlanExplainer, PlanNode
from sluice.query.result_cache import CacheLookup, QueryResultCache
from sluice.query.slow_queries import QueryStats, SlowQueryAnalyzer
from sluice.query.tracking import WriteTracker

__all__ = [
    "ByteBudgetCache",
    "CacheLookup",
    "ColumnUse",
    "DependencyMap",
    "IndexAnalyzer",
    "IndexCandidate",
    "Plan",
    "PlanExplainer",
    "PlanNode",
    "QueryExecutionError",
    "QueryNormalizer",
    "QueryOptimizer",
    "QueryParameterError",
    "QueryResultCache",
    "QuerySample",
    "QueryShape",
    "QueryStats",
    "SlowQueryAnalyzer",
    "WriteTracker",
    "column_uses",
    "database_namespace",
]
