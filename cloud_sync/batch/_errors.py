"""The batch host's errors, in cloud_sync's one exception tree (``cloud_sync._errors``)."""

from __future__ import annotations

from .._errors import CloudError

__all__ = ["BatchError"]


class BatchError(CloudError):
    """A batch run cannot start or go on: a source that lists nothing or cannot be listed, an
    output that cannot be opened or written, an engine that cannot start. A bad *input* is never
    one of these: it becomes a row with ``error``."""
