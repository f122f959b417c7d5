"""Observability: Prometheus metrics, the health/metrics/stats HTTP endpoint, structured logs.

Every metric is computed when it is scraped, from the cluster-wide counters in the shared store, so
any number of prefork worker processes contribute and the endpoint can run anywhere. The write side
(:mod:`sluice.monitoring.recorder`) buffers histogram buckets per process like every other sluice
counter; the read side (:mod:`sluice.monitoring.collector`) turns the store's totals into metrics.
"""
