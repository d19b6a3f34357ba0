"""Delivery: the thin layer around every provider (pooling, retries, back-pressure, metrics)."""

from clarion.delivery.clock import Clock, SystemClock
from clarion.delivery.pool import (
    CredentialsUnusable,
    PoolClosed,
    PoolKey,
    ProviderFactory,
    ProviderPool,
)
from clarion.delivery.retry import RetryPolicy

__all__ = [
    "Clock",
    "CredentialsUnusable",
    "PoolClosed",
    "PoolKey",
    "ProviderFactory",
    "ProviderPool",
    "RetryPolicy",
    "SystemClock",
]
