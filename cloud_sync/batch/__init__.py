"""Batch predictions: one bundle over a directory, glob, list file or S3 prefix, into SQLite,
PostgreSQL or Parquet, on a local loop or Ray Data (``edge batch``).

Parts, one module each, each behind a small interface:
- inputs (``_inputs``): list a source once, read one input where the model runs;
- the predictor (``_predictor``): loads the bundle once, turns inputs into rows (the runtime's own
  records; a bad input is an error row);
- engines (``_engine``: ``Engine``, ``open_engine``): ``local`` (``_local``) and ``ray`` (``_ray``);
- outputs (``_output``: ``Output``, ``open_output``): SQL (``_sql``) and Parquet (``_parquet``);
- the driver (``_run``: ``run_batch``): skip done keys, run, write in transactions.

Importing this package imports neither Ray nor SQLAlchemy nor pyarrow; each engine and output
imports its own library when it is opened.

>>> from cloud_sync.batch import run_batch                                   # doctest: +SKIP
>>> run_batch("mobilenet/", "images/", "sqlite:///preds.db", engine="ray")   # doctest: +SKIP
"""

from ._engine import ENGINES, Engine, EngineOptions, open_engine
from ._errors import BatchError
from ._inputs import LIST_SUFFIXES, InputItem, InputReader, list_inputs
from ._output import Output, open_output
from ._predictor import ROW_COLUMNS, BatchPredictor, PredictorSpec, Row
from ._run import BatchSummary, run_batch

__all__ = [
    "ENGINES",
    "LIST_SUFFIXES",
    "ROW_COLUMNS",
    "BatchError",
    "BatchPredictor",
    "BatchSummary",
    "Engine",
    "EngineOptions",
    "InputItem",
    "InputReader",
    "Output",
    "PredictorSpec",
    "Row",
    "list_inputs",
    "open_engine",
    "open_output",
    "run_batch",
]
