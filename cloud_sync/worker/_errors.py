"""Errors of the queue worker, under cloud_sync's one tree::

    CloudError
    └── WorkerError                 the worker cannot run: bad settings, queues it may not use
        ├── BrokerUnavailableError  the broker cannot be reached, or the connection was lost
        └── UndeliverableError      the broker refused a result, or it has no queue of that name
"""

from __future__ import annotations

from .._errors import CloudError

__all__ = ["BrokerUnavailableError", "UndeliverableError", "WorkerError"]


class WorkerError(CloudError):
    """The worker cannot run: invalid settings, a broker it cannot reach, or a connection lost."""


class UndeliverableError(WorkerError):
    """A result could not be delivered: no queue by that name (``reply_to`` of a client that left),
    or the broker refused it."""


class BrokerUnavailableError(WorkerError):
    """The broker cannot be reached or the connection was lost: a running worker reconnects, and
    the broker gives its unacked messages again."""
