"""The ``sar-bulk`` command: argument parsing, exit codes and wiring, no business logic.

Exit codes: 0 everything done; 1 rows rejected, contacts failed or dossiers invalid; 2 usage or
configuration error; 3 token refused, identity forbidden or action missing; 130/143 interrupted.
``status``: 0, or 1 when a request is overdue (so a monitoring job can alert on it), 2 when there
is no state to read.

Every message printed here goes through the process's redactor (``logs.scrub``): an error's text
may quote the server, and the server may have echoed the token. A closed standard output
(``sar-bulk types | head -1``) ends the command quietly with exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from sar_bulk._version import __version__
from sar_bulk.allocator import tune_allocator, tune_collector
from sar_bulk.config import RUN_OPTIONS, Option, RunConfig, resolve
from sar_bulk.dataverse.auth import AuthKind, build_credential
from sar_bulk.errors import ConfigError, CredentialError, SarBulkError
from sar_bulk.logs import configure_logging, scrub, secrets_from_environ
from sar_bulk.output.url import is_container_url, storage_secrets
from sar_bulk.run.runner import ExitCode, exit_code_for
from sar_bulk.sources.interaction_types import ALL_TYPES

__all__ = ["main"]

# What leaving a run option unset means, for ``run --help``.
_UNSET_MEANS: dict[str, str] = {
    "org": "none, required",
    "contacts": "none, required",
    "date_from": "no start",
    "date_to": "no end",
    "page_size": "the action's own",
    "shard": "no sharding",
    "shard_count": "no sharding",
    "received_column": "a header received, received_on, request_received or date_received",
    "received_format": "ISO, YYYY-MM-DD",
    "extension_column": "a header extension_reason or extension",
    "name_column": "a header name, full_name or fullname",
}

# What each simulator setting does, for ``simulate --help`` (the flags come from its dataclass).
_SIMULATOR_HELP: dict[str, str] = {
    "seed": "seed of the synthetic data: the same seed gives the same org",
    "heavy_fraction": "share of contacts with very many interactions",
    "page_size": "most interactions per page when the request sends no Top",
    "token_prefix": "tokens must start with this to be accepted",
    "token_lifetime": "seconds a token is accepted after its first use (unset: forever)",
    "action_missing": "answer as an org without the action installed (404)",
    "request_limit": "requests per identity in the sliding window (429 beyond)",
    "window_seconds": "length of the service-protection window in seconds",
    "concurrency_limit": "requests in flight per identity (429 beyond)",
    "execution_time_limit": "seconds of server time per identity per window (unset: no limit)",
    "concurrency_retry_after": "Retry-After seconds of a concurrency 429",
    "retry_after_format": "Retry-After as seconds, fractional or http-date",
    "dop_hint": "x-ms-dop-hint header value (recommended parallel requests)",
    "latency": "seconds every answer takes",
    "latency_jitter": "random extra seconds, up to this, per answer",
    "fault_500": "share of requests answered 500",
    "fault_502": "share of requests answered 502",
    "fault_503": "share of requests answered 503",
    "fault_drop": "share of requests whose connection is dropped",
    "fault_slow": "share of requests answered only after --slow-seconds",
    "fault_malformed": "share of requests answered with a broken body",
    "fault_lost": "share of requests carried out whose answer is lost (the connection closes)",
    "slow_seconds": "delay of a 'slow' fault in seconds",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    tune_allocator()  # before any worker thread exists: see sar_bulk.allocator
    tune_collector()  # the modules are imported: their objects leave the collector's walks
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except SarBulkError as exc:
        print(f"sar-bulk: {scrub(str(exc))}", file=sys.stderr)
        return exit_code_for(exc) or ExitCode.INCOMPLETE
    except KeyboardInterrupt:
        return ExitCode.SIGINT
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``| head``): stop quietly, as ``cat`` does.

    Python would print a second BrokenPipeError when it flushes stdout at exit; pointing stdout
    at /dev/null first leaves nothing to flush.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sar-bulk",
        description="GDPR subject-access dossiers in bulk from Dynamics 365: Dataverse rows, "
        "Marketing interactions and Customer Insights - Journeys exports.",
    )
    parser.add_argument("--version", action="version", version=f"sar-bulk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="fetch every contact of a CSV into dossiers",
        description="Fetch every contact of a CSV into dossiers. Each setting may also come from "
        "its environment variable or the --config file; a flag wins over both.",
    )
    run.add_argument("--config", type=Path, help="TOML file with settings (see configs/)")
    for option in RUN_OPTIONS:
        _add_option(run, option)

    demo = sub.add_parser("demo", help="the whole job against the built-in simulator")
    demo.add_argument("--out", type=Path, default=Path("sar-bulk-demo"), help="output folder")
    demo.add_argument("--no-progress", action="store_true", help="no progress line")
    demo.add_argument(
        "--config",
        type=Path,
        default=None,
        help="show the [controller] statement of this config file in the answers, unfilled "
        "template placeholders marked as such (sar-bulk init writes one; default: a sample "
        "company's, named as a sample)",
    )
    demo.add_argument(
        "--org-kind",
        choices=("realtime", "outbound", "both", "dataverse"),  # the simulator's org kinds
        default="realtime",
        help="the simulated org: today's cloud org (realtime), the outbound era, both, or a "
        "Dataverse org without marketing (default: realtime)",
    )

    check = sub.add_parser(
        "check", help="pre-flight: which sources can this org answer with each identity?"
    )
    for name in ("org", "auth", "timeout"):
        _add_option(check, next(o for o in RUN_OPTIONS if o.name == name))
    check.add_argument("--config", type=Path, help="TOML file with settings")

    verify = sub.add_parser(
        "verify", help="check dossiers (zip files, folders of them, or blob container URLs)"
    )
    verify.add_argument("paths", nargs="+", metavar="PATH|URL")
    verify.add_argument(
        "--auth",
        type=AuthKind,
        default=AuthKind.DEFAULT,
        metavar="KIND",
        help="for a container URL without AZURE_STORAGE_CONNECTION_STRING or "
        "AZURE_STORAGE_SAS_TOKEN: " + ", ".join(AuthKind),
    )
    verify.add_argument("--json", action="store_true", help="machine-readable result")
    verify.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="age identity file (AGE-SECRET-KEY-1... lines) to open .zip.age dossiers",
    )
    verify.add_argument(
        "--passphrase-env",
        metavar="NAME",
        help="open .zip.age dossiers with the passphrase held by this environment variable",
    )

    simulate = sub.add_parser(
        "simulate",
        help="serve the local simulator of an org (all three sources)",
        description="Serve a simulated Dataverse org on loopback. It accepts any bearer token "
        "that starts with the token prefix ('sim' unless --token-prefix says otherwise), e.g. "
        "SAR_BULK_TOKEN=sim-me.1 with --auth static-token; the part before the first '.' is "
        "the identity its limits count against.",
    )
    simulate.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (default: 127.0.0.1)"
    )
    simulate.add_argument(
        "--port", default="8765", help="port, 0 for any free port (default: 8765)"
    )
    simulate.add_argument(
        "--heavy",
        action="append",
        default=[],
        metavar="CONTACT=N",
        help="give CONTACT N interactions (repeatable; default: none)",
    )
    simulate.add_argument(
        "--hostile",
        action="append",
        default=[],
        metavar="CONTACT=KIND",
        help="make every answer about CONTACT misbehave as KIND (repeatable; default: none; "
        f"kinds: {', '.join(sorted(_hostile_kinds()))})",
    )
    _add_simulator_options(simulate)

    sub.add_parser("types", help="print the 40 interaction types, one a line")
    init = sub.add_parser("init", help="write a commented config template (never overwrites)")
    init.add_argument("path", nargs="?", type=Path, default=None, metavar="PATH")
    _status_parser(sub)
    return parser


def _port(text: str) -> int:
    """A TCP port; checked here, not by argparse, so a bad one is one line, not the usage."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {text!r} is not a port number: use 0 to 65535 (0: any free)")
    return port


def _hostile_kinds() -> list[str]:
    from sar_bulk.simulator.hostile import KINDS

    return list(KINDS)


def _shown_default(value: Any) -> str:
    """A default as a person reads it: 6h rather than 21600.0, none rather than frozenset()."""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (frozenset, tuple, list)):
        return ", ".join(sorted(map(str, value))) or "none"
    if isinstance(value, float) and value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g}h"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    # The default is shown by hand: argparse's own default must stay None, so that resolve()
    # can tell a flag that was not given from one that was (flag > environment > file).
    default = ""
    # "default:" or "(default ", not "default": --auth's help lists a kind named default.
    if not option.is_switch and not re.search(r"default:|\(default ", option.help):
        if option.default is not None:
            shown = _shown_default(option.default)
        else:
            shown = _UNSET_MEANS.get(option.name, "unset")
        default = f" (default: {shown})"
    help_text = f"{option.help}{default} [env {option.env}]".replace("%", "%%")
    if option.is_switch:
        parser.add_argument(option.flag, dest=option.name, action="store_true", help=help_text)
    elif option.repeatable:
        parser.add_argument(
            option.flag,
            dest=option.name,
            action="append",
            metavar=option.metavar or "VALUE",
            help=help_text,
        )
    else:
        parser.add_argument(
            option.flag, dest=option.name, metavar=option.metavar or "VALUE", help=help_text
        )


def _settings(args: argparse.Namespace, options: tuple[Option, ...]) -> dict[str, Any]:
    flags = {option.name: getattr(args, option.name, None) for option in options}
    return resolve(options, flags=flags, environ=os.environ, config_file=args.config)


def _start_logging(settings: dict[str, Any]) -> None:
    configure_logging(
        fmt=settings.get("log_format", "auto"),
        level=settings.get("log_level", "info"),
        secrets=[
            *secrets_from_environ(os.environ),
            # The dossiers' passphrase, in whatever variable --encrypt-passphrase-env names.
            os.environ.get(settings.get("encrypt_passphrase_env") or ""),
            # The storage connection string's name says nothing secret, but it holds a key.
            *storage_secrets(os.environ),
        ],
    )


def _run(args: argparse.Namespace) -> int:
    from sar_bulk.run.metrics import MetricsSettings, RunMetrics, run_with_metrics
    from sar_bulk.run.runner import RunOutcome, execute_run
    from sar_bulk.run.stop_signals import StopSignals

    settings = _settings(args, RUN_OPTIONS)
    _start_logging(settings)
    config = RunConfig.from_settings(settings, os.environ)
    metrics = MetricsSettings.from_settings(settings)
    # With [[identities]] the runner builds one credential per identity from its own variables.
    credential = None if config.identities else build_credential(config.auth, os.environ)
    credential_name = type(credential).__name__ if credential is not None else "identities"
    show_progress = not settings["no_progress"] and sys.stderr.isatty()
    progress_out = sys.stderr if show_progress else None

    async def run(watch: RunMetrics | None, signals: StopSignals) -> RunOutcome:
        output = None
        if config.published_elsewhere:
            from sar_bulk.output import open_target

            # The storage client retries on the run's own backoff (--retry-base).
            output = open_target(
                config.blob or config.publish_folder or config.out,
                config.auth,
                os.environ,
                backoff=config.retry.base,
                timeout=config.timeout,
            )
        return await execute_run(
            config,
            credential,
            credential_name=credential_name,
            progress_out=progress_out,
            metrics=watch,
            output=output,
            signals=signals,
        )

    async def night() -> RunOutcome:
        # The handlers outlive the run by the metrics' finishing: a signal while the textfile is
        # written asks for nothing more than is being done, instead of killing the process.
        with StopSignals(asyncio.get_running_loop()) as signals:
            return await run_with_metrics(
                metrics,
                shard=config.shard,
                run=lambda watch: run(watch, signals),
                error_code=exit_code_for,
            )

    return asyncio.run(night()).code


def _check(args: argparse.Namespace) -> int:
    from sar_bulk.dataverse.checking import run_check

    # The file is read as a run reads it (every run option known), so the run's own config
    # (contacts, out, rate, ...) can be checked; check uses org, auth, timeout, identities.
    settings = _settings(args, RUN_OPTIONS)
    _start_logging({"log_level": "warning"})
    identities = settings.get("identities") or ()
    if not identities:
        return asyncio.run(run_check(settings, os.environ, out=sys.stdout))
    from sar_bulk.run.identities import identity_environ

    # Each [[identities]] table on its own, as the run would use it: a run drops a refused
    # identity and goes on, so one bad identity must show here before the nightly job.
    # A bad identity (a variable not set, a credential that cannot be built) is reported under
    # its heading and the others are still probed.
    codes = []
    for spec in identities:
        print(f"identity {spec.name} ({spec.auth.value}):", flush=True)
        try:
            environ = identity_environ(spec, os.environ)
            checked = run_check({**settings, "auth": spec.auth}, environ, out=sys.stdout)
            codes.append(asyncio.run(checked))
        except (ConfigError, CredentialError) as exc:
            print(f"  not checked: {scrub(str(exc))}", flush=True)
            codes.append(ExitCode.USAGE if isinstance(exc, ConfigError) else ExitCode.REFUSED)
    return max(codes)


def _demo(args: argparse.Namespace) -> int:
    from sar_bulk.demo import run_demo

    _start_logging({"log_level": "warning"})
    show_progress = not args.no_progress and sys.stderr.isatty()
    progress_out = sys.stderr if show_progress else None
    if args.config is None:
        return asyncio.run(
            run_demo(args.out, progress_out=progress_out, out=sys.stdout, org_kind=args.org_kind)
        )
    from sar_bulk.config import draft_statement_from_file

    statement = draft_statement_from_file(args.config)
    return asyncio.run(
        run_demo(
            args.out,
            progress_out=progress_out,
            out=sys.stdout,
            org_kind=args.org_kind,
            statement=statement,
        )
    )


def _verify(args: argparse.Namespace) -> int:
    from sar_bulk.dossier.encryption import Decryptor
    from sar_bulk.dossier.verify import run_verify_command

    if args.identity is not None and args.passphrase_env is not None:
        raise ConfigError("give --identity or --passphrase-env, not both")
    decryptor = None
    if args.identity is not None:
        decryptor = Decryptor.from_identity_file(args.identity)
    elif args.passphrase_env is not None:
        decryptor = Decryptor.from_passphrase_env(args.passphrase_env, os.environ)
    urls = [path for path in args.paths if is_container_url(path)]
    if not urls:
        return run_verify_command(
            args.paths, as_json=args.json, out=sys.stdout, decryptor=decryptor
        )
    if len(urls) != len(args.paths):
        raise ConfigError("verify either files and folders or container URLs, not both at once")
    from sar_bulk.output.remote_verify import verify_containers

    _start_logging({"log_level": "warning"})
    return asyncio.run(
        verify_containers(
            urls,
            auth=args.auth,
            environ=os.environ,
            as_json=args.json,
            out=sys.stdout,
            decryptor=decryptor,
        )
    )


def _types(args: argparse.Namespace) -> int:
    sys.stdout.write("".join(f"{itype.value}\n" for itype in ALL_TYPES))
    sys.stdout.flush()  # a closed pipe shows here, inside main's handler, not at exit
    return ExitCode.OK


def _simulate(args: argparse.Namespace) -> int:
    from sar_bulk.simulator import SimulatorConfig, serve_forever

    port = _port(args.port)
    values = {name: getattr(args, name) for name in _simulator_fields()}
    heavy: dict[str, int] = {}
    for item in args.heavy:
        contact, _, count = item.partition("=")
        try:
            heavy[contact] = int(count)
        except ValueError:
            raise ConfigError(f"--heavy {item!r}: use CONTACT=N") from None
    hostile: dict[str, str] = {}
    for item in args.hostile:
        contact, _, kind = item.partition("=")
        if not contact or not kind:
            raise ConfigError(f"--hostile {item!r}: use CONTACT=KIND")
        hostile[contact] = kind
    try:
        config = SimulatorConfig(
            **{k: v for k, v in values.items() if v is not None},
            heavy_contacts=heavy,
            hostile_contacts=hostile,
        )
    except ValueError as exc:
        raise ConfigError(f"simulator settings: {exc}") from None

    def ready(url: str) -> None:
        print(f"simulator listening on {url} (Ctrl-C stops it)", flush=True)
        print(
            f"tokens: any bearer token starting with {config.token_prefix!r} is accepted, e.g. "
            f"SAR_BULK_TOKEN={config.token_prefix}-me.1 sar-bulk run --auth static-token "
            f"--org {url} ...; the part before the first '.' is the identity",
            flush=True,
        )

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_forever(config, args.host, port, ready=ready))
    except ValueError as exc:  # not a loopback address
        raise ConfigError(f"--host {args.host!r}: {exc}") from None
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise ConfigError(
            f"cannot listen on {args.host}:{port}: {exc.strerror or exc}; "
            "choose another --port (0: any free port) or --host"
        ) from None
    return ExitCode.OK


def _simulator_fields() -> dict[str, type]:
    """The simulator's simple settings and their types, read from its dataclass."""
    from sar_bulk.simulator import SimulatorConfig

    hints = typing.get_type_hints(SimulatorConfig)
    fields: dict[str, type] = {}
    for field in dataclasses.fields(SimulatorConfig):
        hint = hints[field.name]
        if isinstance(hint, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is typing.Literal:
            hint = str
        if hint in (int, float, str, bool):
            fields[field.name] = hint
    return fields


def _add_simulator_options(parser: argparse.ArgumentParser) -> None:
    from sar_bulk.simulator import SimulatorConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SimulatorConfig)}
    for name, kind in _simulator_fields().items():
        flag = "--" + name.replace("_", "-")
        described = _SIMULATOR_HELP.get(name, f"see SimulatorConfig.{name}")
        # argparse's default stays None (unset: the dataclass decides); the help shows the
        # dataclass's default instead, which is what an unset flag means.
        shown = defaults.get(name)
        help_text = f"{described} (default: {'unset' if shown is None else shown})"
        if kind is bool:
            parser.add_argument(
                flag,
                dest=name,
                action="store_const",
                const=True,
                default=None,
                help=help_text.replace("%", "%%"),
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                type=kind,
                default=None,
                metavar=kind.__name__,
                help=help_text.replace("%", "%%"),
            )


_COMMANDS = {
    "run": _run,
    "demo": _demo,
    "check": _check,
    "verify": _verify,
    "types": _types,
    "simulate": _simulate,
}


def _init(args: argparse.Namespace) -> int:
    from sar_bulk.answer.template import DEFAULT_PATH, write_template

    path = write_template(args.path or DEFAULT_PATH)
    print(f"wrote {path}: fill in [run] and every <placeholder> of [controller]")
    return ExitCode.OK


_COMMANDS["init"] = _init


# -- status: done/failed/pending and the deadlines at risk, read-only from the state ------------
def _status(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import orjson

    from sar_bulk.run.status import read_status, render_text, state_files

    if args.state is None and args.out is None:
        raise ConfigError("give the output folder (sar-bulk status OUT) or --state PATH")
    if args.state is None and is_container_url(args.out):
        from sar_bulk.output.url import ContainerUrl

        url = ContainerUrl.parse(args.out)
        work = Path("sar-bulk-work", url.account, url.container, *url.prefix.split("/"))
        raise ConfigError(
            f"{args.out} is a blob container: the run keeps its state in its --work folder "
            f"(default {work}); give that folder: sar-bulk status WORK"
        )
    files, left_out = ([args.state], []) if args.state is not None else state_files(Path(args.out))
    report = read_status(files, today=datetime.now(UTC).date(), limit=args.limit, left_out=left_out)
    if args.json:
        print(scrub(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode()))
    else:
        print(scrub(render_text(report)))
    return ExitCode.INCOMPLETE if report.overdue else ExitCode.OK


def _status_parser(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="done, failed and pending contacts and the deadlines at risk (read-only)",
        description="Read the state of a run (read-only: safe while the run goes on) and print "
        "how many contacts are done, failed and pending, and the requests not answered yet, "
        "overdue first, then due within 7 days, then the next ones. Exit 1 when a request is "
        "overdue.",
    )
    # A string, not a Path: a container URL given as OUT must reach _status uncut ("https:/").
    status.add_argument(
        "out", nargs="?", metavar="OUT", help="the run's --out folder (--work for a container)"
    )
    status.add_argument("--state", type=Path, metavar="PATH", help="a state file instead of OUT's")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--limit", type=_limit, default=20, metavar="N", help="requests listed (default: 20)"
    )


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of requests (0 or more)")
    return value


_COMMANDS["status"] = _status


if __name__ == "__main__":
    sys.exit(main())
