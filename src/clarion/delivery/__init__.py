"""Delivery: the thin layer around every provider (pooling, retries, back-pressure, metrics).

Build one ``ProviderPool`` (with a factory that makes a provider from stored credentials) and one
``Dispatcher`` over it at start-up; call ``Dispatcher.send`` to deliver with in-process retries or
``Dispatcher.send_once`` from a durable job worker; ``Dispatcher.close`` at shutdown.
"""

from clarion.delivery.clock import Clock, SystemClock
from clarion.delivery.dispatcher import CredentialsRejected, Dispatcher, OnCredentialsRejected
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
    "CredentialsRejected",
    "CredentialsUnusable",
    "Dispatcher",
    "OnCredentialsRejected",
    "PoolClosed",
    "PoolKey",
    "ProviderFactory",
    "ProviderPool",
    "RetryPolicy",
    "SystemClock",
]
