"""Interoperability with other continual-learning libraries (optional extras).

Avalanche (``pip install 'lifelong[avalanche]'``): its benchmarks as lifelong streams
(:func:`stream_from_avalanche`, :func:`benchmark_from_factory`, :class:`AvalancheScenario`),
lifelong streams as its benchmarks (:func:`benchmark_from_stream`), and its strategies as
baselines in lifelong's runner (:class:`AvalancheBaseline`, ``avalanche:NAME`` through
:func:`resolve`). Importing this package does not import avalanche.
"""

from lifelong.interop.avalanche_baselines import (
    ALGORITHMS,
    AvalancheBaseline,
    avalanche_strategies,
    avalanche_strategy_class,
    resolve,
)
from lifelong.interop.avalanche_streams import (
    AvalancheScenario,
    benchmark_from_factory,
    benchmark_from_stream,
    require_avalanche,
    stream_from_avalanche,
)

__all__ = [
    "ALGORITHMS",
    "AvalancheBaseline",
    "AvalancheScenario",
    "avalanche_strategies",
    "avalanche_strategy_class",
    "benchmark_from_factory",
    "benchmark_from_stream",
    "require_avalanche",
    "resolve",
    "stream_from_avalanche",
]
