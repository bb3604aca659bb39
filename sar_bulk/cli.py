"""The ``sar-bulk`` command: argument parsing, exit codes and wiring, no business logic.

Exit codes: 0 everything done; 1 rows rejected, contacts failed or dossiers invalid; 2 usage or
configuration error; 3 token refused, identity forbidden or action missing; 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sar_bulk._version import __version__
from sar_bulk.config import RUN_OPTIONS, Option, RunConfig, resolve
from sar_bulk.dataverse.auth import AuthKind, build_credential
from sar_bulk.errors import ConfigError, CredentialError, InputError, SarBulkError
from sar_bulk.logs import configure_logging
from sar_bulk.output.url import is_container_url, storage_secrets
from sar_bulk.run.runner import ExitCode
from sar_bulk.sources.interaction_types import ALL_TYPES

__all__ = ["main"]

_SECRET_VARIABLES = ("SAR_BULK_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except (ConfigError, InputError) as exc:
        print(f"sar-bulk: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except CredentialError as exc:
        print(f"sar-bulk: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    except SarBulkError as exc:
        print(f"sar-bulk: {exc}", file=sys.stderr)
        return ExitCode.INCOMPLETE
    except KeyboardInterrupt:
        return ExitCode.SIGINT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sar-bulk",
        description="GDPR subject-access dossiers in bulk from Dynamics 365 Marketing.",
    )
    parser.add_argument("--version", action="version", version=f"sar-bulk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="fetch every contact of a CSV into dossiers")
    run.add_argument("--config", type=Path, help="TOML file with settings (see configs/)")
    for option in RUN_OPTIONS:
        _add_option(run, option)

    demo = sub.add_parser("demo", help="the whole job against the built-in simulator")
    demo.add_argument("--out", type=Path, default=Path("sar-bulk-demo"), help="output folder")
    demo.add_argument("--no-progress", action="store_true", help="no progress line")

    check = sub.add_parser("check", help="pre-flight: can this org and identity run the action?")
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

    simulate = sub.add_parser("simulate", help="serve the local simulator of the action")
    simulate.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    simulate.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    simulate.add_argument(
        "--heavy",
        action="append",
        default=[],
        metavar="CONTACT=N",
        help="give CONTACT N interactions (repeatable)",
    )
    _add_simulator_options(simulate)

    sub.add_parser("types", help="print the 40 interaction types, one a line")
    init = sub.add_parser("init", help="write a commented config template (never overwrites)")
    init.add_argument("path", nargs="?", type=Path, default=None, metavar="PATH")
    return parser


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    help_text = f"{option.help} [env {option.env}]"
    if option.is_switch:
        parser.add_argument(option.flag, dest=option.name, action="store_true", help=help_text)
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
            *(os.environ.get(name) for name in _SECRET_VARIABLES),
            *storage_secrets(os.environ),
        ],
    )


def _run(args: argparse.Namespace) -> int:
    from sar_bulk.run.runner import RunOutcome, execute_run

    settings = _settings(args, RUN_OPTIONS)
    _start_logging(settings)
    config = RunConfig.from_settings(settings, os.environ)
    credential = build_credential(config.auth, os.environ)
    show_progress = not settings["no_progress"] and sys.stderr.isatty()
    progress_out = sys.stderr if show_progress else None

    async def run() -> RunOutcome:
        output = None
        if config.blob is not None:
            from sar_bulk.output import open_target

            # The storage client retries on the run's own backoff (--retry-base).
            output = open_target(
                config.blob,
                config.auth,
                os.environ,
                backoff=config.retry.base,
                timeout=config.timeout,
            )
        return await execute_run(
            config,
            credential,
            credential_name=type(credential).__name__,
            progress_out=progress_out,
            output=output,
        )

    outcome = asyncio.run(run())
    return outcome.code


def _check(args: argparse.Namespace) -> int:
    from sar_bulk.dataverse.checking import run_check

    options = tuple(o for o in RUN_OPTIONS if o.name in ("org", "auth", "timeout"))
    settings = _settings(args, options)
    _start_logging({"log_level": "warning"})
    return asyncio.run(run_check(settings, os.environ, out=sys.stdout))


def _demo(args: argparse.Namespace) -> int:
    from sar_bulk.demo import run_demo

    _start_logging({"log_level": "warning"})
    show_progress = not args.no_progress and sys.stderr.isatty()
    progress_out = sys.stderr if show_progress else None
    return asyncio.run(run_demo(args.out, progress_out=progress_out, out=sys.stdout))


def _verify(args: argparse.Namespace) -> int:
    from sar_bulk.dossier.verify import run_verify_command

    urls = [path for path in args.paths if is_container_url(path)]
    if not urls:
        return run_verify_command(args.paths, as_json=args.json, out=sys.stdout)
    if len(urls) != len(args.paths):
        raise ConfigError("verify either files and folders or container URLs, not both at once")
    from sar_bulk.output.remote_verify import verify_containers

    _start_logging({"log_level": "warning"})
    return asyncio.run(
        verify_containers(
            urls, auth=args.auth, environ=os.environ, as_json=args.json, out=sys.stdout
        )
    )


def _types(args: argparse.Namespace) -> int:
    for itype in ALL_TYPES:
        print(itype.value)
    return ExitCode.OK


def _simulate(args: argparse.Namespace) -> int:
    from sar_bulk.simulator import SimulatorConfig, serve_forever

    values = {name: getattr(args, name) for name in _simulator_fields()}
    heavy: dict[str, int] = {}
    for item in args.heavy:
        contact, _, count = item.partition("=")
        try:
            heavy[contact] = int(count)
        except ValueError:
            raise ConfigError(f"--heavy {item!r}: use CONTACT=N") from None
    try:
        config = SimulatorConfig(
            **{k: v for k, v in values.items() if v is not None}, heavy_contacts=heavy
        )
    except ValueError as exc:
        raise ConfigError(f"simulator settings: {exc}") from None

    def ready(url: str) -> None:
        print(f"simulator listening on {url} (Ctrl-C stops it)", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(config, args.host, args.port, ready=ready))
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
    for name, kind in _simulator_fields().items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_const", const=True, default=None)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, metavar=kind.__name__)


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


if __name__ == "__main__":
    sys.exit(main())
