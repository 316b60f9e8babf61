"""Batch runs: many images, one durable JSON line per image, resumable, stopped by a circuit
breaker when a required stage goes down.

- ``inputs.py``: which images (a folder, a CSV, a list file);
- ``results.py``: the results file (writer, reading, recovery for ``--resume``);
- ``summary.py``: counts by status and the exceptions that stop a run;
- ``breaker.py``: the circuit breaker;
- ``local.py``: the asyncio engine (and :func:`map_unordered`, the one concurrent runner).

Inputs, results, summary and breaker are engine-neutral (no event loop): other engines reuse them.
"""

from .breaker import CircuitBreaker, failure_kind
from .inputs import (
    ID_COLUMNS,
    IMAGE_SUFFIXES,
    PATH_COLUMNS,
    BatchInput,
    BatchItem,
    InputKind,
    check_unique,
    find_images,
    read_batch_input,
)
from .local import (
    DEFAULT_FATAL_ERRORS,
    LocateFn,
    ResultCallback,
    StartCallback,
    arun_batch,
    locate_one,
    map_unordered,
    run_batch,
)
from .results import (
    LINE_STATUSES,
    BatchResult,
    ResultRecord,
    ResultsScan,
    ResultsWriter,
    open_results,
    prepare_output,
    read_results,
    scan_results,
)
from .summary import BatchAborted, BatchCircuitOpen, BatchInterrupted, BatchStopped, BatchSummary

__all__ = [
    "DEFAULT_FATAL_ERRORS", "ID_COLUMNS", "IMAGE_SUFFIXES", "LINE_STATUSES", "PATH_COLUMNS",
    "BatchAborted", "BatchCircuitOpen", "BatchInput", "BatchInterrupted", "BatchItem", "BatchResult",
    "BatchStopped", "BatchSummary", "CircuitBreaker", "InputKind", "LocateFn", "ResultCallback",
    "ResultRecord", "ResultsScan", "ResultsWriter", "StartCallback", "arun_batch", "check_unique",
    "failure_kind", "find_images", "locate_one", "map_unordered", "open_results", "prepare_output", "read_batch_input",
    "read_results", "run_batch", "scan_results",
]
