"""Serverless hosts of a bundle: an AWS Lambda handler and a Google Cloud Functions entry point.

Both load the bundle once per cold start (``EDGE_BUNDLE``: a path in the function's package
directory, or an ``s3://`` URL; ``EDGE_BUNDLE_PUBKEY`` makes its signature mandatory; see
``_loader.py``) and answer an image or an Open Inference Protocol JSON tensor with the record JSON
of ``edge_runtime.make_record``, the same record as ``edge run``, ``edge worker`` and the service.
Neither imports FastAPI or SQLAlchemy: a cold start is the runtime, the model and one prediction.

AWS Lambda: handler ``cloud_sync.serverless.lambda_handler``, for API Gateway REST (proxy, payload
1.0; add ``image/*`` to the API's binary media types), HTTP APIs (payload 2.0) and Function URLs; it
loads the bundle at the first request. ``cloud_sync.serverless.lambda_function.lambda_handler`` is
the same handler with the bundle loaded at import, in Lambda's init phase (SnapStart, provisioned
concurrency).
A container image on Lambda's Python 3.11 base image::

    FROM public.ecr.aws/lambda/python:3.11
    # the project's wheel (python -m build --wheel), with the LiteRT backend; boto3 is in the base image
    COPY dist/edge_runtime-0.1.0-py3-none-any.whl /tmp/
    RUN pip install --no-cache-dir "/tmp/edge_runtime-0.1.0-py3-none-any.whl[tflite]" && rm /tmp/*.whl
    # either ship the bundle in the image (found as ${LAMBDA_TASK_ROOT}/bundle) ...
    COPY mobilenet/ ${LAMBDA_TASK_ROOT}/bundle/
    # ... or fetch it at the cold start (the role needs s3:GetObject; downloaded into /tmp):
    # ENV EDGE_BUNDLE=s3://my-models/mobilenet_v2-1.tar.gz
    COPY release.pub ${LAMBDA_TASK_ROOT}/release.pub
    ENV EDGE_BUNDLE_PUBKEY=release.pub
    CMD ["cloud_sync.serverless.lambda_handler"]

(``[onnx]`` instead of ``[tflite]`` for ONNX bundles. Give the function 1024 MB or more: Lambda's CPU
share grows with its memory, and the cold start with it shrinks.)

Google Cloud Functions (2nd gen) / Cloud Run functions: a ``main.py`` of one line beside
``requirements.txt`` (``edge-runtime[tflite,serverless]``) and the bundle directory::

    from cloud_sync.serverless import http_predict as predict

deployed with ``gcloud functions deploy predict --gen2 --runtime python311 --trigger-http
--entry-point predict --set-env-vars EDGE_BUNDLE=bundle``, or run locally with
``functions-framework --source main.py --target predict --port 8080``.
"""

from __future__ import annotations

from .._host import BundleHost, HostError, RequestError
from ._aws import lambda_handler
from ._gcf import http_predict
from ._loader import BUNDLE_ENV, DEFAULT_NAMES, PUBKEY_ENV, get_host, load_host, load_stats, unload

__all__ = [
    "BUNDLE_ENV",
    "DEFAULT_NAMES",
    "PUBKEY_ENV",
    "BundleHost",
    "HostError",
    "RequestError",
    "get_host",
    "http_predict",
    "lambda_handler",
    "load_host",
    "load_stats",
    "unload",
]
