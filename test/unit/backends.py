"""The backends a backend-parametrized test runs on: every backend in the registry.

A new backend registered in ``ml_bridge.core.registry.BACKENDS`` is picked up by the
conformance suite and by every test that parametrizes over ``ALL``.
"""
from ml_bridge.core.registry import BACKENDS

#: Every registered backend, by name.
ALL = BACKENDS.names()
