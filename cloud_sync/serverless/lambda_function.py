"""The Lambda handler with the bundle loaded during the init phase: handler
``cloud_sync.serverless.lambda_function.lambda_handler``.

Importing this module loads the bundle (``EDGE_BUNDLE``), so the work happens in Lambda's INIT
phase (full CPU share whatever the memory size, and captured in the snapshot with SnapStart or done
ahead of traffic with provisioned concurrency) instead of in the first request. A bundle that cannot
be loaded then fails the init, which Lambda reports and retries at the next invocation; with
``cloud_sync.serverless.lambda_handler`` instead it is a 500 JSON answer per request.
"""

from __future__ import annotations

from ._aws import lambda_handler
from ._loader import get_host

__all__ = ["lambda_handler"]

get_host()
