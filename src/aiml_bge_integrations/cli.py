"""The ``aiml-bge`` command: ``embed`` (the embedding job), ``demo`` and ``serve``.

Exit codes (also in docs/cli.md, "Exit codes")::

    0    success
    1    the API failed (after retries), or an unexpected error
    2    bad command line or settings
    3    no API key, or the key was refused (401)
    4    the model is retired or not served (404 for the model)
    5    bad input: unreadable, a bad line (named), or over-long passages with --long-text error
    6    the output cannot be written
    7    an unfinished run cannot be resumed by this command (different input or settings, or
         a checkpoint that disagrees with its staged files)
    8    another aiml-bge embed is writing the same output; nothing was read, sent or changed
    9    done, but with --on-error record some rows were refused: the output holds them with
         their error instead of a vector
    130  interrupted (Ctrl-C); the last checkpoint is kept, the same command resumes

Every failure ends with one line on stderr, ``aiml-bge: error: ...``. The API key is read
from ``AIMLAPI_API_KEY`` or, when stdin is a terminal, from a hidden prompt; never from a flag,
so it does not land in shell history.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib.util
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from ._models import _is_aimlapi, missing_key_message, policy_window
from ._settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    SETTINGS,
    Setting,
    env_default,
    int_at_least,
)
from .client import EmbeddingsClient, Usage
from .errors import (
    AimlBgeError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    MissingAPIKeyError,
    ModelNotFoundError,
    OutputBusyError,
    OutputError,
)

__all__ = [
    "EXIT_API",
    "EXIT_BUSY",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_KEY",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_PARTIAL",
    "EXIT_RESUME",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "read_api_key",
]

EXIT_OK = 0
"""Success."""
EXIT_API = 1
"""The API failed after its retries, or an unexpected error."""
EXIT_USAGE = 2
"""Bad command line or settings."""
EXIT_KEY = 3
"""No API key, or the key was refused."""
EXIT_MODEL = 4
"""The model is retired or not served."""
EXIT_INPUT = 5
"""Bad input (the line or file is named)."""
EXIT_OUTPUT = 6
"""The output cannot be written."""
EXIT_RESUME = 7
"""An unfinished run cannot be resumed by this command."""
EXIT_BUSY = 8
"""Another run is writing the same output (it holds the lock); this one changed nothing."""
EXIT_PARTIAL = 9
"""Done, with rows the server refused written with their error (``--on-error record``)."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C); the checkpoint is kept."""

_PROG = "aiml-bge"


class _Failure(Exception):
    """Ends the command with ``code`` and one line of ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(code: int, message: str) -> int:
    print(f"{_PROG}: error: {_one_line(message)}", file=sys.stderr)
    return code


def read_api_key(base_url: str | None = None) -> str:
    """The key from ``AIMLAPI_API_KEY``, else from a hidden prompt when stdin is a terminal.

    Raises ``MissingAPIKeyError`` when there is neither.
    """
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key and sys.stdin is not None and sys.stdin.isatty():
        try:
            key = getpass.getpass("AI/ML API key (input hidden): ").strip()
        except (EOFError, KeyboardInterrupt):
            key = ""
    if not key:
        raise MissingAPIKeyError(
            missing_key_message(
                f"set {API_KEY_ENV} (keys are never taken from a flag, so they stay out of "
                "shell history)",
                base_url or env_default("base_url"),
            )
        )
    return key


# -- parser -----------------------------------------------------------------------------------


def _value_of(name: str, convert: Callable[[str], Any], check: Callable[[str, Any], Any]) -> Any:
    """An argparse ``type``: the text converted, then the setting's own check.

    Text that does not convert goes to the check as it is, so the message is the one the
    clients and adapters give for the same bad value.
    """

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = text
        try:
            return check(name, value)
        except ConfigurationError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _flag_help(setting: Setting) -> str:
    where = f"env {setting.env}; " if setting.env else ""
    default = setting.default if setting.default is not None else "none"
    shown = f"{default:g}" if isinstance(default, float) else default
    return f"{setting.doc} ({where}default {shown})"


_SETTING_FLAGS = tuple(s.name for s in SETTINGS if s.flag)
"""The client settings ``aiml-bge embed`` has a flag for (from the one definition)."""


def _add_client_settings(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "client settings (as in the core; unset flags fall back to the environment, then defaults)"
    )
    for setting in SETTINGS:
        if not setting.flag:
            continue
        flag = "--" + setting.name.replace("_", "-")
        if setting.type is bool:
            # --name / --no-name: a flag can turn a setting on or off whatever its default.
            g.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=setting.doc
            )
            continue
        g.add_argument(
            flag,
            type=_value_of(setting.name, setting.cli_type or str, setting.check),
            choices=setting.choices or None,
            help=_flag_help(setting),
        )


def _client_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _SETTING_FLAGS if getattr(args, k, None) is not None}


class _Parser(argparse.ArgumentParser):
    """Ends a bad command line as every failure ends: one ``aiml-bge: error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{_PROG}: error: {_one_line(message)} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``aiml-bge`` argument parser (``serve`` is listed; its arguments are the server's)."""
    parser = _Parser(
        prog=_PROG,
        description="BGE embeddings over the AI/ML API or any OpenAI-compatible server.",
        epilog=f"The API key comes from {API_KEY_ENV} or a hidden prompt, never from a flag.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    embed = sub.add_parser(
        "embed",
        help="embed a corpus into a file of vectors (resumable)",
        description="Embed every passage of INPUT and write the vectors to OUTPUT. An "
        "interrupted run continues where it stopped when the same command is run again.",
        epilog="Exit codes: 0 done; 1 the API failed (after retries); 2 bad command line or "
        "settings; 3 no API key, or the key was refused; 4 the model is not served; 5 bad "
        "input; 6 the output cannot be written; 7 an unfinished run of OUTPUT does not fit "
        "this command (--restart discards it); 8 another aiml-bge embed is writing OUTPUT "
        "(this one changed nothing); 9 done, but some rows were written with an error (--on-error "
        "record); 130 interrupted (the same command continues).",
    )
    embed.add_argument(
        "input",
        type=Path,
        metavar="INPUT",
        help="a text file (one passage per line; id = line number), a .jsonl file, or a "
        "directory of .txt/.md files (one passage per file; id = relative path)",
    )
    embed.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUTPUT",
        help=".jsonl (id and embedding per line), .npy (matrix, ids in <stem>.ids.jsonl) or "
        ".parquet (needs pyarrow)",
    )
    embed.add_argument("--input-format", choices=("auto", "text", "jsonl", "dir"), default="auto")
    embed.add_argument(
        "--output-format", choices=("auto", "jsonl", "npy", "parquet"), default="auto"
    )
    embed.add_argument(
        "--field", default="text", help="JSONL: the field holding the text (default: text)"
    )
    embed.add_argument(
        "--id-field", help="JSONL: the field holding the id (default: the line number)"
    )
    embed.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help=".npy/.parquet float type (default float32); JSONL keeps the server's numbers",
    )
    embed.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT if it exists (once complete)"
    )
    embed.add_argument(
        "--restart",
        action="store_true",
        help="discard an unfinished run's checkpoint and start from the first passage "
        "(never one that is still running: that is refused with exit code 8)",
    )
    embed.add_argument(
        "--dry-run",
        action="store_true",
        help="count tokens (exactly for models whose tokenizer the package ships), report "
        "passages over the model's window, and estimate requests and credits; sends nothing "
        "and needs no key",
    )
    embed.add_argument(
        "--on-error",
        choices=("stop", "record"),
        default="stop",
        help="a passage the server refuses for its own content (a 400 or 422 naming it, or "
        "over the token window with --long-text error): stop there and name it (default), or "
        "record: write it with its error instead of a vector, go on, and exit with 9 "
        "(.jsonl and .parquet only)",
    )
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    _add_client_settings(embed)
    _add_ray_flags(embed)
    embed.set_defaults(handler=_cmd_embed)

    demo = sub.add_parser(
        "demo",
        help="embed a small corpus and answer questions (local stand-in server without a key)",
        description=f"The main job in miniature. With {API_KEY_ENV} set it uses the real API "
        f"({BASE_URL_ENV} or the default); without, it starts the local stand-in server on "
        "127.0.0.1 and sends nothing anywhere else.",
    )
    demo.add_argument(
        "--top-k",
        type=_value_of("--top-k", int, int_at_least(1)),
        default=3,
        help="passages shown per query",
    )
    demo.set_defaults(handler=_cmd_demo)

    sub.add_parser(
        "serve",
        help="run the local AIML-compatible server (see: aiml-bge serve --help)",
        add_help=False,
    )
    return parser


# -- commands ---------------------------------------------------------------------------------


def _serve(argv: list[str]) -> int:
    try:
        from .server import serve_main
    except ImportError as err:
        return _error(
            EXIT_USAGE,
            f"the local server is not available ({err}); install it with "
            "pip install 'aiml-bge-integrations[server]'",
        )
    return int(serve_main(argv) or 0)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        return run_demo(top_k=args.top_k)
    except KeyboardInterrupt:
        return _error(EXIT_INTERRUPTED, "interrupted")
    except AimlBgeError as err:
        return _error(_code_for(err), str(err))


def _code_for(err: BaseException) -> int:
    from .errors import InputFileError, ResumeError

    if isinstance(err, OutputBusyError):
        return EXIT_BUSY
    if isinstance(err, MissingAPIKeyError | AuthenticationError):
        return EXIT_KEY
    if isinstance(err, ModelNotFoundError):
        return EXIT_MODEL
    if isinstance(err, InputFileError | InvalidInputError):
        return EXIT_INPUT
    if isinstance(err, OutputError):
        return EXIT_OUTPUT
    if isinstance(err, ResumeError):
        return EXIT_RESUME
    if isinstance(err, ConfigurationError):
        return EXIT_USAGE
    return EXIT_API


def _cmd_embed(args: argparse.Namespace) -> int:
    try:
        if args.on_error == "record":
            _check_on_error(args)
        if args.dry_run:
            return _dry_run(args)
        if args.output is None:
            raise _Failure(EXIT_USAGE, "the output is required: -o OUTPUT")
        if args.ray:
            return _embed_on_ray(args)
        return _embed(args)
    except _Failure as failure:
        return _error(failure.code, failure.message)


def _check_on_error(args: argparse.Namespace) -> None:
    """``--on-error record`` where the output can hold a row without a vector; before anything."""
    from ._job import check_on_error, output_format_for

    if args.ray:
        raise _Failure(EXIT_USAGE, "--on-error record is not available with --ray")
    if args.output is None:
        return
    try:
        fmt = output_format_for(args.output) if args.output_format == "auto" else args.output_format
        check_on_error(args.on_error, fmt)
    except (ValueError, ConfigurationError) as err:
        raise _Failure(EXIT_USAGE, str(err)) from None


def _dry_run(args: argparse.Namespace) -> int:
    from ._job import InputFileError, dry_run, open_source

    batch_size = args.batch_size or env_default("batch_size")
    long_text = args.long_text or env_default("long_text")
    # As the clients resolve it: the run's long-text policy depends on the model.
    model = args.model or env_default("model")
    try:
        source = open_source(args.input, args.input_format, args.field, args.id_field)
        report = dry_run(source, batch_size=batch_size, long_text=long_text, model=model)
    except InputFileError as err:
        raise _Failure(EXIT_INPUT, str(err)) from None
    except ValueError as err:
        raise _Failure(EXIT_USAGE, str(err)) from None
    label = source.id_label
    window = report.window
    counts = "bert-base-uncased WordPiece tokens" + (
        "" if window else ", an estimate for this model"
    )
    lines = [
        "dry run: nothing was sent",
        f"input      {args.input} ({source.kind}, {report.total:,} passages)",
        f"model      {model} (counts are {counts}, [CLS] and [SEP] included)",
        f"tokens     {report.tokens:,} (longest passage {report.max_tokens:,})",
    ]
    if window is None:
        why = "" if long_text == "none" else f"--long-text {long_text} does not apply; "
        lines.append(
            f"window     not known exactly for {model}: {why}texts are sent as they are and "
            "its server applies its own limit"
        )
    elif report.over_limit:
        named = ", ".join(f"{label} {i} ({n} tokens)" for i, n in report.over_examples)
        more = report.over_limit - len(report.over_examples)
        action = {
            "truncate": f"they will be cut to {window} tokens (--long-text truncate)",
            "error": "the run will refuse them (--long-text error)",
            "none": "they will be sent as they are (--long-text none)",
        }[report.long_text]
        lines.append(
            f"{f'over {window}':<10} {report.over_limit:,} passage(s): {named}"
            f"{f' and {more:,} more' if more > 0 else ''}; {action}"
        )
    else:
        lines.append(f"{f'over {window}':<10} none")
    if report.repeated:
        lines.append(
            f"repeated   {report.repeated:,} passage(s) repeat an earlier one's text; the run "
            "writes that vector for them and does not send them"
        )
    if report.billed_tokens != report.tokens:
        what = " and without repeats" if report.repeated else ""
        lines.append(f"billed     {report.billed_tokens:,} tokens after truncation{what}")
    base_url = args.base_url or env_default("base_url")
    credits = (
        f"about {report.credits:,} (estimate: each request max(1, ceil(tokens / 1000)))"
        if _is_aimlapi(base_url)
        else f"no credits ({base_url} is not the AI/ML API)"
    )
    lines += [f"requests   {report.requests:,} (batch size {batch_size})", f"credits    {credits}"]
    cache = args.cache or env_default("cache")
    if cache is not None:
        held = _cached_count(args, source)
        distinct = report.total - report.repeated
        lines.append(
            f"cached     {held:,} of the {distinct:,} distinct texts are in the cache {cache} "
            "(the run sends only the others; requests and credits above count them all)"
        )
    if args.output is not None:
        lines.append(f"output     {args.output} (not written)")
    print("\n".join(lines))
    if args.output is not None:
        # --ray writes a directory of Parquet parts, whatever its name.
        _check_output_needs(Path(args.output), "parquet" if args.ray else args.output_format)
    return EXIT_OK if not (report.over_limit and report.long_text == "error") else EXIT_INPUT


def _cached_count(args: argparse.Namespace, source: Any) -> int:
    """How many of the input's distinct texts the cache holds, looked up read-only, unsent."""
    try:
        # The key is never sent (nothing is): a dry run needs none, and the cache keys do not
        # depend on it.
        client = EmbeddingsClient(
            api_key=os.environ.get(API_KEY_ENV, "").strip() or "dry-run",
            **_client_settings(args),
        )
        with client:
            return client.cached_documents(p.text for p in source.records())
    except ConfigurationError as err:
        raise _Failure(EXIT_USAGE, str(err)) from None


def _check_output_needs(output: Path, output_format: str) -> None:
    """What the real run needs to write ``output``: its library, a directory it can write."""
    from ._job import output_format_for

    try:
        fmt = output_format_for(output) if output_format == "auto" else output_format
    except ValueError as err:
        raise _Failure(EXIT_USAGE, str(err)) from None
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise _Failure(
            EXIT_OUTPUT,
            "the run would fail: Parquet output needs pyarrow: "
            "pip install 'aiml-bge-integrations[parquet]'",
        )
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise _Failure(
            EXIT_OUTPUT, f"the run would fail: cannot write in {folder} (not a writable directory)"
        )


class _ProgressBar:
    """A tqdm bar on stderr showing passages, tokens, credits, rate and time left."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None
        self._last = 0

    def __call__(self, done: int, total: int, usage: Usage) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self._enabled = False
                return
            self._bar = tqdm(
                total=total,
                initial=done,
                unit=" passages",
                unit_scale=total >= 10_000,
                dynamic_ncols=True,
                file=sys.stderr,
                smoothing=0.05,
            )
            self._last = done
        self._bar.set_postfix_str(
            f"{usage.prompt_tokens:,} tokens, {usage.credits:,.0f} credits, "
            f"{usage.concurrency} in flight",
            refresh=False,
        )
        self._bar.update(done - self._last)
        self._last = done

    def write(self, line: str) -> None:
        """``line`` on stderr, above the bar when one is shown."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


_RETRY_LINE_SECONDS = 10.0
"""At most one line about retries in this many seconds."""


def _retry_cause(cause: str) -> str:
    """A retry's cause (``Usage.retries_by_cause``'s keys) said for a user."""
    if cause == "connection":
        return "the server cannot be reached (connection refused or dropped)"
    if cause == "timeout":
        return "a request timed out"
    if cause == "validation":
        return "a reply was malformed"
    if cause == "429":
        return "the server refused with 429 (too many requests)"
    return f"the server answered HTTP {cause}"


class _RetryNotice(logging.Handler):
    """Says on stderr when the client retries and why: the first at once, then one line per 10 s.

    It listens to the client's log record for each retry (logger ``aiml_bge_integrations``,
    ``"retrying after %s in %.2fs"`` with the cause and the wait), so a run that waits on a
    server that cannot be reached is not silent for the retries' whole back-off.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self._say = say
        self._last = -math.inf
        self._count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """One line for this retry, unless one was said in the last 10 s."""
        args = record.args
        if record.msg != "retrying after %s in %.2fs" or not isinstance(args, tuple):
            return
        cause, delay = (*args, None, None)[:2]
        if not isinstance(delay, int | float):
            return
        self._count += 1
        now = time.monotonic()
        if now - self._last < _RETRY_LINE_SECONDS:
            return
        self._last = now
        so_far = f" ({self._count} retries so far)" if self._count > 1 else ""
        self._say(f"retrying: {_retry_cause(str(cause))}; next try in {float(delay):.1f} s{so_far}")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Listen while the block runs."""
        logger = logging.getLogger("aiml_bge_integrations")
        level = logger.level
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


def _embed(args: argparse.Namespace) -> int:
    from ._job import JobSpec, run_job, work_dir_for

    settings = _client_settings(args)
    quiet = args.quiet
    bar = _ProgressBar(enabled=not quiet and sys.stderr.isatty())

    def notice(message: str) -> None:
        if not quiet:
            bar.write(f"{_PROG}: {message}")

    spec = JobSpec(
        input=args.input,
        output=args.output,
        input_format=args.input_format,
        output_format=args.output_format,
        field=args.field,
        id_field=args.id_field,
        dtype=args.dtype,
        overwrite=args.overwrite,
        restart=args.restart,
        on_error=args.on_error,
    )
    try:
        key = read_api_key(settings.get("base_url"))

        def make_client() -> EmbeddingsClient:
            return EmbeddingsClient(api_key=key, **settings)

        with _RetryNotice(notice).installed():
            result = run_job(spec, make_client, progress=bar, notice=notice)
    except KeyboardInterrupt:
        bar.close()
        saved = _saved(work_dir_for(args.output))
        return _error(
            EXIT_INTERRUPTED,
            f"interrupted; {saved}run the same command to continue"
            if saved
            else "interrupted before any passage was saved; run the same command to start again",
        )
    except AimlBgeError as err:
        bar.close()
        return _error(_code_for(err), str(err) + _resume_hint(err, args.output))
    except ValueError as err:
        bar.close()
        return _error(EXIT_USAGE, str(err))
    except OSError as err:
        bar.close()
        return _error(EXIT_OUTPUT, f"cannot write {args.output}: {err}")
    bar.close()
    if not quiet:
        _summary(result, settings.get("max_concurrency") or env_default("max_concurrency"))
    return EXIT_PARTIAL if result.errors else EXIT_OK


def _add_ray_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "Ray (pip install 'aiml-bge-integrations[ray]'; --max-concurrency and the per-minute "
        "paces then hold for the whole cluster)"
    )
    g.add_argument(
        "--ray",
        action="store_true",
        help="embed on Ray Data: OUTPUT is a directory of Parquet files (id, text, the input's "
        "other fields, embedding); run again to resume",
    )
    g.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster to use (default: a single local node on 127.0.0.1)",
    )
    g.add_argument(
        "--actors",
        type=_value_of("--actors", int, int_at_least(1)),
        help="embedding actors (default 2)",
    )


def _embed_on_ray(args: argparse.Namespace) -> int:
    try:
        from ._ray_job import RayJobSpec, run_ray_job
    except ImportError as err:
        return _error(EXIT_USAGE, f"--ray needs Ray Data ({err})")
    if args.output_format not in ("auto", "parquet") or args.dtype != "float32":
        return _error(EXIT_USAGE, "--ray writes float32 Parquet only")
    quiet = args.quiet

    def notice(message: str) -> None:
        if not quiet:
            print(f"{_PROG}: {message}", file=sys.stderr)

    try:
        # A remote cluster holds its own key; a local node inherits this process's.
        key = (
            read_api_key(_client_settings(args).get("base_url"))
            if args.ray_address is None
            else None
        )
        spec = RayJobSpec(
            input=args.input,
            output=args.output,
            input_format=args.input_format,
            field=args.field,
            id_field=args.id_field,
            overwrite=args.overwrite,
            restart=args.restart,
            settings=_client_settings(args),
            actors=args.actors,
            ray_address=args.ray_address,
        )
        result = run_ray_job(spec, key=key, notice=notice)
    except KeyboardInterrupt:
        return _error(EXIT_INTERRUPTED, "interrupted; run the same command to continue")
    except AimlBgeError as err:
        resumable = not isinstance(err, ConfigurationError | OutputBusyError | OutputError)
        hint = " (run the same command to continue)" if resumable else ""
        return _error(_code_for(err), str(err) + hint)
    except ValueError as err:
        return _error(EXIT_USAGE, str(err))
    except OSError as err:
        return _error(EXIT_OUTPUT, f"cannot write {args.output}: {err}")
    if not quiet and result.already_complete:
        print(
            f"already complete: {result.output}/ holds all {result.total:,} vectors of this "
            "input, written with these settings; nothing was sent or changed"
        )
    elif not quiet:
        what = "finished the unfinished run: " if result.resumed else ""
        before = result.total - result.embedded
        split = f" ({result.embedded:,} this run, {before:,} before)" if before else ""
        print(
            f"{what}wrote {result.total:,} vectors{split} to {result.output}/ in "
            f"{result.seconds:.1f} s"
        )
    return EXIT_OK


def _saved(work: Path) -> str:
    from ._job import saved_progress

    saved = saved_progress(work)
    if saved is None:
        return ""
    done, total = saved
    return f"{done:,} of {total:,} passages are saved in {work}; "


def _resume_hint(err: BaseException, output: Path) -> str:
    from ._job import work_dir_for

    if isinstance(err, ModelNotFoundError):
        return " On the command line, use --model NAME or --base-url URL."
    if not isinstance(err, APIError):
        return ""
    saved = _saved(work_dir_for(output))
    return f" ({saved}run the same command to continue)" if saved else ""


def _n(count: float, one: str, many: str | None = None) -> str:
    word = one if count == 1 else (many or one + "s")
    return f"{count:,.0f} {word}"


def _in_flight(u: Usage, limit: int) -> str:
    """What the concurrency figures mean, without implying a limit the server never showed."""
    said = f"the client allowed up to {u.peak_concurrency} requests in flight"
    refused = u.retries_by_cause.get("429", 0)
    if not refused:
        return f"{said} (the client's limit is {limit}; the server refused none)"
    return (
        f"{said}; the server refused {_n(refused, 'request')} with 429, and the client "
        f"settled at {u.concurrency} in flight (its limit is {limit})"
    )


def _refused_line(result: Any) -> str:
    """What the summary says of the rows written with an error instead of a vector."""
    first = result.error_examples[0] if result.error_examples else None
    named = f"; the first, id {first[0]!r}: {first[1]}" if first else ""
    return (
        f"refused: {_n(result.errors, 'row was', 'rows were')} refused and written with an "
        f"error instead of a vector{named}"
    )


def _summary(result: Any, limit: int) -> None:
    if result.already_complete:
        print(
            f"already complete: {result.output} holds all {result.total:,} vectors of this "
            "input, written with these settings; nothing was sent or changed"
        )
        if result.errors:
            print(_refused_line(result))
        return
    u = result.usage
    sent = result.total - result.resumed_from
    rate = sent / result.seconds if result.seconds > 0 else 0.0
    where = str(result.output) + (f" (ids in {result.sidecar})" if result.sidecar else "")
    dim = f" ({result.dim}-d)" if result.dim else ""
    print(
        f"wrote {result.total:,} vectors{dim} to {where} in {result.seconds:.1f} s "
        f"({rate:,.0f} passages/s)"
    )
    line = (
        f"usage: {_n(u.requests, 'request')}, {_n(u.prompt_tokens, 'token')}, "
        f"{_n(u.credits, 'credit')}"
    )
    if u.retries:
        line += f", {_n(u.retries, 'retry', 'retries')}"
    if result.resumed_from:
        t = result.total_usage
        line += (
            f" this run ({result.resumed_from:,} passages were done before); whole job: "
            f"{_n(t['requests'], 'request')}, {_n(t['prompt_tokens'], 'token')}, "
            f"{_n(t['credits'], 'credit')}"
        )
    if result.over_limit:
        window = policy_window(result.runs[-1]["model"]) if result.runs else None
        to = f"{window} tokens" if window else "the model's window"
        line += f"; {result.over_limit:,} passage(s) were truncated to {to}"
    if result.shared:
        line += (
            f"; {_n(result.shared, 'passage')} repeated an earlier one and got its vector "
            "without being sent"
        )
    if u.peak_concurrency:
        line += "; " + _in_flight(u, limit)
    print(line)
    if result.errors:
        print(_refused_line(result))
    this = result.runs[-1]["base_url"] if result.runs else None
    earlier = sorted({run["base_url"] for run in result.runs[:-1]} - {this})
    if earlier:
        print(
            f"note: this run used {this}; earlier runs of this job used {', '.join(earlier)}, "
            "and the output holds their vectors too"
        )


# -- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aiml-bge`` with ``argv`` (default: the process arguments); returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "serve":
        return _serve(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return handler(args)


def _exit() -> NoReturn:  # pragma: no cover - for python -m
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _exit()
