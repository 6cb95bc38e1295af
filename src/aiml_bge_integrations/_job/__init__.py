"""The corpus job behind ``aiml-bge embed`` and ``aiml-bge embed --ray``: passages in, vectors out, resumable.

Data flow::

    sources.InputSource.records()  ->  EmbeddingsClient.iter_embeddings()  ->  sinks.Sink (staged)
                                                           -> checked -> renamed into place

- **Input** (``sources``): a text file (one passage per line, id = line number from 1, blank
  lines skipped), a JSONL file (text from ``field``, id from ``id_field`` or the line
  number), or a directory of ``.txt``/``.md`` files (one passage per file, id = path relative
  to the directory).
- **Plan** (``plan``, nothing written or sent): every record is checked in a first pass
  (``scan``) that also fingerprints the input (SHA-256) and finds over-long passages
  (``long_text_verdict``); ``run_identity`` says what a run is; ``dry_run`` counts tokens.
- **Output** (``sinks``): JSONL (``{"id", "embedding"}`` per line), ``.npy`` (a float32 or
  float64 matrix) with an ``<stem>.ids.jsonl`` sidecar, or Parquet (columns ``id`` and
  ``embedding``, needs pyarrow). Everything is staged in ``<output>.partial/``; the finished
  files are checked against the input (rows, and a matrix's shape) and only then renamed into
  place, so a file at the output path is always a finished one. A manifest,
  ``<output>.manifest.json``, says how it was made (model, base URL, dimension, long-text
  policy, instructions, package version, the run's identity); a rerun of a completed run
  finds it, checks the output, says so and changes nothing.
- **Checkpoint** (``checkpoint``): the lock (an OS lock on ``<output>.partial/lock``, taken
  before anything in the work directory is read or deleted), the state (``state.json``,
  replaced atomically), and the integrity check (a resumed run's staged files must hold
  exactly the rows its state says). Nothing is reached through a symbolic link, and only the
  files the job names are ever deleted (``files``).
- **Resume** (``run``): every batch is appended to the staged files as soon as it is back
  (in input order, so they only ever grow by whole batches) and handed to the OS. After each
  write, the passages written and each staged file's length change together, in one
  assignment; the checkpoint saves that pair every two seconds, at the end and on any
  failure. A restarted run checks the staged files against it, adopts the whole rows written
  after it (checking that their ids come in input order), cuts off a row torn by a kill,
  skips the passages done, and carries on: the result is byte for byte that of an
  uninterrupted run. Batches in flight (at most ``2 * max_concurrency``) when the process
  died are sent again.

The Ray job (``_ray_job``) uses the same readers, plan and checkpoint.
"""

from __future__ import annotations

from ..errors import InputFileError, OutputBusyError, OutputError, ResumeError
from .checkpoint import saved_progress, work_dir_for
from .plan import DryRunReport, ScanResult, credits_for_request, dry_run, scan
from .run import (
    ON_ERROR,
    JobResult,
    JobSpec,
    check_on_error,
    manifest_for,
    read_manifest,
    run_job,
)
from .sinks import ids_sidecar_for, make_sink, npy_header, output_format_for
from .sources import InputSource, JsonlSource, Passage, input_format_for, open_source

__all__ = [
    "ON_ERROR",
    "DryRunReport",
    "InputFileError",
    "InputSource",
    "JobResult",
    "JobSpec",
    "JsonlSource",
    "OutputBusyError",
    "OutputError",
    "Passage",
    "ResumeError",
    "ScanResult",
    "check_on_error",
    "credits_for_request",
    "dry_run",
    "ids_sidecar_for",
    "input_format_for",
    "make_sink",
    "manifest_for",
    "npy_header",
    "open_source",
    "output_format_for",
    "read_manifest",
    "run_job",
    "saved_progress",
    "scan",
    "work_dir_for",
]
