"""Settings of a run: frozen dataclasses, filled from defaults < TOML file < SAR_BULK_* < flags.

Usage::

    settings = resolve(RUN_OPTIONS, flags={"org": "https://x.crm.dynamics.com"},
                       environ=os.environ, config_file=Path("nightly.toml"))
    config = RunConfig.from_settings(settings)

Each option is declared once in ``RUN_OPTIONS``: its flag (``--date-from``), its environment
variable (``SAR_BULK_DATE_FROM``) and its TOML key (``date_from``, top level or under ``[run]``)
all come from that one name, so the three sources cannot drift apart. Two tables of the TOML
file are not options: ``[[records.tables]]`` (custom tables) and ``[controller]``, the
controller's Article 15 statement that every dossier's answer carries (``sar_bulk.answer``;
``sar-bulk init`` writes a template). Without ``[controller]`` the run warns once and each answer
says plainly that the statement is missing. Secrets are not options:
tokens and client secrets come only from the environment or the credential's own sources, and a
TOML file that holds one is refused.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from sar_bulk.answer import Statement, load_statement
from sar_bulk.answer.statement import mark_unfilled
from sar_bulk.dataverse.auth import AuthKind
from sar_bulk.dataverse.http import DEFAULT_MAX_ANSWER_BYTES
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import MAX_CONCURRENCY, ThrottleSettings
from sar_bulk.dates import DateRange
from sar_bulk.dossier.encryption import Encryptor
from sar_bulk.errors import ConfigError
from sar_bulk.output.url import ContainerUrl, is_container_url
from sar_bulk.sharding import Shard
from sar_bulk.sources.base import CustomTable, SourceSettings
from sar_bulk.sources.interaction_types import InteractionType, parse_types
from sar_bulk.sources.registry import AUTO, parse_sources

__all__ = ["RUN_OPTIONS", "Option", "RunConfig", "resolve", "state_shard_count"]

ENV_PREFIX = "SAR_BULK_"
_SECRET_WORDS = ("token", "secret", "password", "key")


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its name, how to parse it from text, its default and its help."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    is_switch: bool = False
    repeatable: bool = False  # the flag may be given again; variable and TOML take a comma list

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number > 0")
    return value


def _switch(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _concurrency(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CONCURRENCY:
        raise ValueError(f"must be at most {MAX_CONCURRENCY} (Dataverse's concurrency limit)")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _auth_kind(text: str) -> AuthKind:
    try:
        return AuthKind(text)
    except ValueError:
        raise ValueError(f"must be one of {', '.join(AuthKind)}") from None


def _text(text: str) -> str:
    return text


def _path(text: str) -> Path:
    """A path; blank text is refused. ``Path("")`` is ".", so ``SAR_BULK_OUT="$DIR"`` with
    ``DIR`` unset would put the dossiers (personal data) in whatever folder the run began in."""
    if not text.strip():
        raise ValueError("must be a path; leave the setting out for the default")
    return Path(text)


def _out(text: str) -> Path | ContainerUrl:
    """A folder, or a blob container when the text is a URL (checked here, no network)."""
    return ContainerUrl.parse(text) if is_container_url(text) else _path(text)


_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(text: str) -> float:
    """Seconds, or a number with a unit: ``90s``, ``45m``, ``6h``, ``1d``."""
    stripped = text.strip().lower()
    unit = _UNITS.get(stripped[-1:], None) if stripped else None
    try:
        value = float(stripped[:-1] if unit else stripped) * (unit or 1.0)
    except ValueError:
        raise ValueError("must be seconds or a duration like 90s, 45m, 6h") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a duration > 0, e.g. 90s, 45m, 6h")
    return value


def _sources(text: str) -> str:
    parse_sources(text)  # checked here, so a bad name is named with its flag or variable
    return text


def _text_list(text: str) -> tuple[str, ...]:
    """Comma-separated values (repeated flags arrive joined by commas), order kept."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


_PLAIN_INSTEAD: Final = "; leave the setting out to write plain, unencrypted zips"


def _recipients(text: str) -> tuple[str, ...]:
    """``--encrypt-to``: at least one recipient. Given but empty (``SAR_BULK_ENCRYPT_TO=
    "$RECIPIENT"`` with the variable unset) asked for encryption; writing the dossiers in the
    clear instead would hand out personal data nobody meant to send unprotected."""
    recipients = _text_list(text)
    if not recipients:
        raise ValueError(
            "must name at least one age recipient (age1... or ssh-...)" + _PLAIN_INSTEAD
        )
    return recipients


def _variable_name(text: str) -> str:
    """``--encrypt-passphrase-env``: a variable's name; empty is refused as ``_recipients``."""
    if not text.strip():
        raise ValueError(
            "must name the environment variable that holds the passphrase" + _PLAIN_INSTEAD
        )
    return text


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port, 0 to 65535 (0: any free port, logged)")
    return value


def _prom_file(text: str) -> Path:
    if not text.endswith(".prom"):
        raise ValueError("must end in .prom (node_exporter's textfile collector reads only those)")
    return Path(text)


# strptime directives that read a year (%c and %x: the locale's date and time, which hold one),
# and those Python 3.13's strptime counts as one when the format also has %d.
_YEAR_DIRECTIVES: Final = frozenset("YyGcx")
_SPELLED_YEAR: Final = frozenset("YyG")


def _directives(text: str) -> set[str]:
    """The letters of a format's directives, "%%" read as strptime reads it (a literal %)."""
    found: set[str] = set()
    at = text.find("%")
    while 0 <= at < len(text) - 1:
        found.add(text[at + 1])
        at = text.find("%", at + 2)
    return found


def _date_format(text: str) -> str:
    """A ``strptime`` format that names a whole date (day, month and year) and reads it back."""
    sample = date(2026, 11, 30)
    # Without a year it cannot read 2026 back. And strptime of %d without a spelled year
    # warns from Python 3.13 on (a DeprecationWarning: leap days; the behaviour changes in
    # 3.15), once here and once for each received date: such a format is refused unasked.
    directives = _directives(text)
    ok = bool(directives & _YEAR_DIRECTIVES) and (
        "d" not in directives or bool(directives & _SPELLED_YEAR)
    )
    try:
        ok = ok and datetime.strptime(sample.strftime(text), text).date() == sample
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("must be a strptime format with day, month and year, e.g. %d/%m/%Y")
    return text


RUN_OPTIONS: tuple[Option, ...] = (
    Option("org", _text, None, "organisation URL, e.g. https://contoso.crm4.dynamics.com", "URL"),
    Option("auth", _auth_kind, AuthKind.DEFAULT, "credential: " + ", ".join(AuthKind), "KIND"),
    Option("contacts", _text, None, "CSV of contact ids ('-' reads standard input)", "PATH"),
    Option("id_column", _text, None, "name of the id column (default: detected)", "NAME"),
    Option("types", _text, "all", "'all' or a comma list of interaction types", "LIST"),
    Option("date_from", _text, None, "first day, MM-DD-YYYY or YYYY-MM-DD", "DATE"),
    Option("date_to", _text, None, "last day, MM-DD-YYYY or YYYY-MM-DD", "DATE"),
    Option(
        "sources",
        _sources,
        AUTO,
        "'auto' (every source the org answers for) or a comma list of interactions, records, "
        "realtime",
        "LIST",
    ),
    Option("page_size", _positive_int, None, "interactions per page, sent as Top", "N"),
    Option(
        "out",
        _out,
        Path("sar-bulk-out"),
        "output folder for dossiers and the report, or a blob container URL "
        "https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]",
        "DIR|URL",
    ),
    Option(
        "work",
        _path,
        None,
        "local folder for the state and staged dossiers: with a container --out (default "
        "sar-bulk-work/ACCOUNT/CONTAINER[/PREFIX]), or with a folder --out to keep spooled data "
        "and unencrypted zips out of it (a dossier moves into --out once finished and sealed)",
        "DIR",
    ),
    Option("state", _path, None, "state file (default OUT or WORK/.sar-bulk/state.sqlite)", "PATH"),
    Option("restart", _switch, False, "ignore the state of earlier runs", is_switch=True),
    Option(
        "replace",
        _switch,
        False,
        "replace dossiers that answer another question (other sources, types, dates, org)",
        is_switch=True,
    ),
    Option("exclude_tables", _names, frozenset(), "records: tables not to export", "LIST"),
    Option("realtime_wait", _duration, 6 * 3600.0, "realtime: longest wait per export", "TIME"),
    Option("realtime_poll", _duration, 30.0, "realtime: how often exports are polled", "TIME"),
    Option("max_parked", _positive_int, 10_000, "contacts waiting on exports at once", "N"),
    Option("shard", Shard.parse, None, "process only shard I of N, e.g. 0/4", "I/N"),
    Option("shard_count", _positive_int, None, "N shards, index from JOB_COMPLETION_INDEX", "N"),
    Option("rate", _positive_float, 6000 / 300, "requests per second per identity", "R"),
    Option("concurrency", _concurrency, None, "requests in flight (default: x-ms-dop-hint)", "N"),
    Option("window", _positive_int, 32, "contacts in progress at once", "N"),
    Option("timeout", _positive_float, 120.0, "seconds per request", "S"),
    Option("retry_base", _positive_float, 0.5, "first backoff ceiling in seconds", "S"),
    Option("retry_cap", _positive_float, 60.0, "largest backoff in seconds", "S"),
    Option("retry_attempts", _positive_int, 8, "failed tries of a transient fault per page", "N"),
    Option("retry_budget", _positive_float, 900.0, "seconds one type may spend waiting", "S"),
    Option("max_pages", _positive_int, 10_000, "pages per contact and type before giving up", "N"),
    Option(
        "retry_after_cap",
        _positive_float,
        300.0,
        "longest Retry-After obeyed in seconds; longer ones are clamped and logged",
        "S",
    ),
    Option(
        "max_answer_bytes",
        _positive_int,
        DEFAULT_MAX_ANSWER_BYTES,
        "largest answer read, after decompression; a larger one fails its part",
        "BYTES",
    ),
    Option("log_format", _choice("auto", "json", "console"), "auto", "auto, json or console"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Option("no_progress", _switch, False, "no progress line on the terminal", is_switch=True),
    Option(
        "encrypt_to",
        _recipients,
        (),
        "write <id>.zip.age encrypted to this age recipient (age1... or an ssh-ed25519/"
        "ssh-rsa public key); repeatable, each recipient can decrypt",
        "RECIPIENT",
        repeatable=True,
    ),
    Option(
        "encrypt_passphrase_env",
        _variable_name,
        None,
        "write <id>.zip.age encrypted with the passphrase held by this environment variable",
        "NAME",
    ),
    # Prometheus metrics of the run (sar_bulk/run/metrics.py): served while it runs, and/or
    # written at its end for node_exporter's textfile collector.
    Option("metrics_port", _port, None, "serve /metrics on this port (0: any)", "PORT"),
    Option("metrics_host", _text, "127.0.0.1", "address the metrics port listens on", "HOST"),
    Option("metrics_textfile", _prom_file, None, "write metrics here at the end", "PATH.prom"),
    # Deadlines (run/deadlines.py): optional CSV columns; without them no deadline is known.
    Option("received_column", _text, None, "column of the date each request was received", "NAME"),
    Option("received_format", _date_format, None, "strptime format of received dates", "FMT"),
    Option("extension_column", _text, None, "column of a two-month extension's reason", "NAME"),
    Option("name_column", _text, None, "column of the subject's name (for the dossier)", "NAME"),
)


def resolve(
    options: tuple[Option, ...],
    *,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None,
) -> dict[str, Any]:
    """Merge the sources, flag > environment > file > default, parsing and checking each."""
    from_file = _read_config_file(config_file, options) if config_file else {}
    settings: dict[str, Any] = {
        "custom_tables": from_file.pop(_TABLES_KEY, ()),
        "statement": from_file.pop(_STATEMENT_KEY, None),
        "identities": from_file.pop(_IDENTITIES_KEY, ()),
    }
    for option in options:
        flag_value = flags.get(option.name)
        if flag_value is not None and flag_value is not False:
            settings[option.name] = _parsed(option, flag_value, option.flag)
        elif option.env in environ:
            settings[option.name] = _parsed(option, environ[option.env], option.env)
        elif option.name in from_file:
            where = f"{option.name} in {config_file}"
            settings[option.name] = _parsed(option, from_file[option.name], where)
        else:
            settings[option.name] = option.default
    return settings


def _parsed(option: Option, value: Any, where: str) -> Any:
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, list):
        value = ",".join(str(item) for item in value)
    elif not isinstance(value, str):
        value = str(value)
    try:
        return option.parse(value)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{where}: {value!r} {_why(exc)}") from None


def _why(exc: Exception) -> str:
    text = str(exc)
    return text if text.startswith("must") else f"is not valid: {text}"


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _read_config_file(path: Path, options: tuple[Option, ...]) -> dict[str, Any]:
    document = _load_toml(path)
    section = document.get("run", {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: run must be a table ([run]), not a value")
    skip = ("run", "records", "controller", "identities")
    top = {k: v for k, v in document.items() if k not in skip}
    if twice := sorted(top.keys() & section.keys()):
        raise ConfigError(
            f"config file {path}: {twice[0]} is set twice, at the top level and under [run]; "
            "keep one"
        )
    merged = top | section
    known = {option.name for option in options}
    for key in merged:
        if any(word in key.lower() for word in _SECRET_WORDS):
            raise ConfigError(
                f"config file {path} holds {key!r}: secrets belong in the environment "
                "(SAR_BULK_TOKEN, AZURE_CLIENT_SECRET, ...), never in a file"
            )
        if key not in known:
            raise ConfigError(
                f"config file {path}: unknown setting {key!r}; known: {', '.join(sorted(known))}"
            )
    if "records" in document:
        merged[_TABLES_KEY] = _custom_tables(document["records"], path)
    if "controller" in document:
        try:
            merged[_STATEMENT_KEY] = load_statement(document["controller"])
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    if "identities" in document:
        merged[_IDENTITIES_KEY] = parse_identities(document["identities"], path)
    return merged


def draft_statement_from_file(path: Path) -> Statement | None:
    """The ``[controller]`` statement of a config file for the demo, or None when it has none.

    Placeholders the template still holds read "not filled in yet" (``mark_unfilled``), so a
    new user sees their draft answer; ``run`` refuses them instead.
    """
    document = _load_toml(path)
    if "controller" not in document:
        return None
    try:
        return load_statement(mark_unfilled(document["controller"]))
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


_TABLES_KEY: Final = "custom_tables"
_STATEMENT_KEY: Final = "statement"
_TABLE_FIELDS: Final = ("name", "entity_set", "filter")
_TABLE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")


def _custom_tables(section: object, path: Path) -> tuple[CustomTable, ...]:
    """``[[records.tables]]`` entries: name, entity_set and filter, each a string."""
    where = f"config file {path}: [records]"
    if not isinstance(section, dict) or set(section) - {"tables"}:
        raise ConfigError(f"{where} may hold only a [[records.tables]] array")
    tables = section.get("tables", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: tables must be an array of tables ([[records.tables]])")
    found: list[CustomTable] = []
    for number, table in enumerate(tables, 1):
        if not isinstance(table, dict) or set(table) != set(_TABLE_FIELDS):
            raise ConfigError(
                f"{where}: table {number} must have exactly {', '.join(_TABLE_FIELDS)}"
            )
        if not all(isinstance(table[f], str) and table[f] for f in _TABLE_FIELDS):
            raise ConfigError(f"{where}: table {number}: every field must be a non-empty string")
        if not _TABLE_NAME.fullmatch(table["name"]):
            raise ConfigError(
                f"{where}: table {number}: name {table['name']!r} must be letters, digits and _ "
                "(it names the dossier entry records/<name>.json)"
            )
        found.append(CustomTable(table["name"], table["entity_set"], table["filter"]))
    names = [t.name for t in found]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two tables have the same name")
    return tuple(found)


# --- identity pool (issue 11): the [[identities]] tables, in a block of their own. ----------

_IDENTITIES_KEY: Final = "identities"
_IDENTITY_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_IDENTITY_FIELDS: Final = frozenset({"name", "auth", "env", "rate", "concurrency"})
# The standard variables a credential kind reads; an identity maps each to a variable of its own.
IDENTITY_VARIABLES: Final = frozenset(
    {
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "SAR_BULK_TOKEN",
    }
)


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """One ``[[identities]]`` table: a name, a credential kind, where its secrets live.

    ``env`` maps a standard variable the kind reads (``AZURE_CLIENT_SECRET``, ``SAR_BULK_TOKEN``,
    ...) to the variable that holds this identity's value; ``rate``/``concurrency`` override the
    run's ``--rate``/``--concurrency`` for this identity (``None``: the run's).
    """

    name: str
    auth: AuthKind
    env: Mapping[str, str]
    rate: float | None = None
    concurrency: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "auth": self.auth.value,
            "env": dict(sorted(self.env.items())),
            "rate": self.rate,
            "concurrency": self.concurrency,
        }


def parse_identities(section: object, path: Path) -> tuple[IdentitySpec, ...]:
    """``[[identities]]`` tables: checked here, before anything runs (names, kinds, numbers)."""
    where = f"config file {path}: [[identities]]"
    if not isinstance(section, list) or not all(isinstance(t, dict) for t in section):
        raise ConfigError(f"{where} must be an array of tables ([[identities]])")
    specs: list[IdentitySpec] = []
    for number, table in enumerate(section, 1):
        label = f"{where} {number}"
        unknown = sorted(set(table) - _IDENTITY_FIELDS)
        if unknown:
            raise ConfigError(
                f"{label}: unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(_IDENTITY_FIELDS))} (secrets go in the environment, "
                "named under env)"
            )
        name = table.get("name")
        if not isinstance(name, str) or not _IDENTITY_NAME.fullmatch(name):
            raise ConfigError(f"{label}: name must be letters, digits, '.', '_' or '-' (1-64)")
        label = f"{where} {name!r}"
        try:
            auth = _auth_kind(str(table.get("auth", "")))
        except ValueError as exc:
            raise ConfigError(f"{label}: auth {exc}") from None
        env = table.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(
                f"{label}: env must be a table of variable names, e.g. env = "
                '{ AZURE_CLIENT_SECRET = "APP_A_SECRET" }'
            )
        strange = sorted(set(env) - IDENTITY_VARIABLES)
        if strange:
            raise ConfigError(
                f"{label}: env names unknown variable(s) {', '.join(strange)}; known: "
                f"{', '.join(sorted(IDENTITY_VARIABLES))}"
            )
        bad = sorted(k for k, v in env.items() if not _ENV_NAME.fullmatch(v))
        if bad:
            raise ConfigError(
                f"{label}: env.{bad[0]} must name an environment variable (letters, digits, _), "
                "not hold its value"
            )
        rate = _identity_number(table, "rate", label, _positive_float)
        concurrency = _identity_number(table, "concurrency", label, _concurrency)
        specs.append(IdentitySpec(name, auth, dict(env), rate, concurrency))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"{where}: the name(s) {', '.join(twice)} appear more than once")
    for kind in (AuthKind.DEFAULT, AuthKind.AZURE_CLI):
        # These read the process's own environment or `az login`: two would be one identity.
        if sum(spec.auth is kind for spec in specs) > 1:
            raise ConfigError(
                f"{where}: more than one identity uses auth {kind.value!r}, which cannot tell "
                "them apart; give each its own kind and variables"
            )
    return tuple(specs)


def _identity_number(
    table: Mapping[str, Any], key: str, label: str, parse: Callable[[str], Any]
) -> Any:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{label}: {key} must be a number")
    try:
        return parse(str(value))
    except ValueError as exc:
        raise ConfigError(f"{label}: {key} {value!r} {_why(exc)}") from None


def _refuse_nested(out: Path, work: Path) -> None:
    """``--work`` beside a folder ``--out``, never the same folder or one inside the other: the
    work folder holds plaintext, and the output folder must not."""
    a, b = out.resolve(), work.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise ConfigError(
            f"--work {work} and --out {out} must be two separate folders, neither inside the "
            "other: the work folder holds spooled data and unencrypted zips that must not be in "
            "the output folder"
        )


def _default_work(url: ContainerUrl) -> Path:
    """The local work folder of a container output: one per account, container and prefix."""
    return Path("sar-bulk-work", url.account, url.container, *url.prefix.split("/"))


def _state_name(shard: Shard | None) -> str:
    """One state file per shard, so shards sharing an output folder never share one."""
    return "state.sqlite" if shard is None else f"state.shard-{shard.index}-of-{shard.count}.sqlite"


_SHARD_STATE: Final = re.compile(r"state\.shard-[0-9]+-of-([0-9]+)\.sqlite")


def state_shard_count(name: str) -> int | None:
    """The shard count N of a state file named as ``_state_name`` names a shard's, else None."""
    match = _SHARD_STATE.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one ``sar-bulk run`` needs, checked."""

    org: OrgUrl
    auth: AuthKind
    contacts: str
    id_column: str | None
    types: tuple[InteractionType, ...]
    dates: DateRange
    page_size: int | None
    out: Path
    state: Path
    restart: bool
    shard: Shard | None
    throttle: ThrottleSettings
    retry: RetryPolicy
    window: int
    timeout: float
    max_pages: int
    sources: tuple[str, ...] | None = None  # None: auto, every source whose probe answers
    replace: bool = False
    custom_tables: tuple[CustomTable, ...] = ()
    excluded_tables: frozenset[str] = frozenset()
    realtime_wait: float = 6 * 3600.0
    realtime_poll: float = 30.0
    max_parked: int = 10_000
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    # Protected delivery (--encrypt-to / --encrypt-passphrase-env); None: plain <id>.zip.
    encryptor: Encryptor | None = field(default=None, compare=False, repr=False)
    received_column: str | None = None  # None: a known header (received, date_received, ...)
    received_format: str | None = None  # None: ISO dates only
    extension_column: str | None = None
    name_column: str | None = None
    statement: Statement | None = None  # [controller]; None: every answer says it is missing
    identities: tuple[IdentitySpec, ...] = ()  # [[identities]]; empty: one identity from --auth
    # A container URL: dossiers and the report are published there, while ``out`` is the local
    # work folder (state, staged dossiers, a copy of the report). None: ``out`` is the output.
    blob: ContainerUrl | None = None
    # A folder --out given with --work: finished dossiers and the report are moved there, and
    # ``out`` is the work folder, so the output folder never holds plaintext (spooled rows, a zip
    # before --encrypt-to seals it). None: ``out`` is the output.
    publish_folder: Path | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], environ: Mapping[str, str]) -> RunConfig:
        if not settings.get("org"):
            raise ConfigError("no org given: use --org URL (or SAR_BULK_ORG, or org in --config)")
        if not settings.get("contacts"):
            raise ConfigError("no contacts given: use --contacts PATH ('-' for standard input)")
        try:
            types = parse_types(settings["types"])
        except ValueError as exc:
            raise ConfigError(f"--types: {exc}") from None
        blob: ContainerUrl | None = None
        publish_folder: Path | None = None
        out = settings["out"]
        if isinstance(out, ContainerUrl):
            blob = out
            out = settings.get("work") or _default_work(blob)
        elif settings.get("work") is not None:
            publish_folder, out = out, settings["work"]
            _refuse_nested(publish_folder, out)
        shard = settings["shard"]
        if settings["shard_count"] is not None:
            if shard is not None:
                raise ConfigError("give --shard I/N or --shard-count N, not both")
            shard = Shard.from_env(settings["shard_count"], environ)
        try:
            retry = RetryPolicy(
                base=settings["retry_base"],
                cap=settings["retry_cap"],
                attempts=settings["retry_attempts"],
                budget=settings["retry_budget"],
            )
        except ValueError as exc:
            raise ConfigError(f"retry settings: {exc}") from None
        return cls(
            org=OrgUrl.parse(settings["org"]),
            auth=settings["auth"],
            contacts=settings["contacts"],
            id_column=settings["id_column"],
            types=types,
            dates=DateRange.parse(settings["date_from"], settings["date_to"]),
            page_size=settings["page_size"],
            out=out,
            state=settings["state"] or out / ".sar-bulk" / _state_name(shard),
            restart=settings["restart"],
            shard=shard,
            throttle=ThrottleSettings(
                rate=settings["rate"],
                concurrency=settings["concurrency"],
                retry_after_cap=settings["retry_after_cap"],
            ),
            retry=retry,
            window=settings["window"],
            timeout=settings["timeout"],
            max_pages=settings["max_pages"],
            sources=parse_sources(settings["sources"]),
            replace=settings["replace"],
            custom_tables=tuple(settings.get("custom_tables", ())),
            excluded_tables=frozenset(settings["exclude_tables"]),
            realtime_wait=settings["realtime_wait"],
            realtime_poll=settings["realtime_poll"],
            max_parked=settings["max_parked"],
            max_answer_bytes=settings["max_answer_bytes"],
            encryptor=Encryptor.from_settings(
                settings.get("encrypt_to", ()), settings.get("encrypt_passphrase_env"), environ
            ),
            received_column=settings["received_column"],
            received_format=settings["received_format"],
            extension_column=settings["extension_column"],
            name_column=settings["name_column"],
            statement=settings.get("statement"),
            identities=tuple(settings.get("identities", ())),
            blob=blob,
            publish_folder=publish_folder,
        )

    @property
    def published_elsewhere(self) -> bool:
        """Are finished dossiers moved out of ``out`` (the work folder) to a container or folder?"""
        return self.blob is not None or self.publish_folder is not None

    @property
    def output_description(self) -> str:
        """Where the dossiers end up: the container URL or the folder."""
        if self.blob is not None:
            return self.blob.text
        return str(self.publish_folder if self.publish_folder is not None else self.out)

    @property
    def source_settings(self) -> SourceSettings:
        """What the sources read of this configuration."""
        return SourceSettings(
            dates=self.dates,
            interaction_types=self.types,
            page_size=self.page_size,
            max_pages=self.max_pages,
            custom_tables=self.custom_tables,
            excluded_tables=self.excluded_tables,
            realtime_wait=self.realtime_wait,
            realtime_poll=self.realtime_poll,
        )

    @property
    def fingerprint(self) -> str:
        """What makes a dossier the answer to this run: org, types, dates, page size, tables.

        Which sources answered is added by the engine (``auto`` is resolved by the probes).
        """
        material: dict[str, Any] = {
            "org": self.org.base,
            "types": [t.value for t in self.types],
            "date_from": self.dates.wire_from,
            "date_to": self.dates.wire_to,
            "page_size": self.page_size,
        }
        if self.custom_tables or self.excluded_tables:  # absent: fingerprints of earlier runs hold
            material["custom_tables"] = [
                [t.name, t.entity_set, t.filter] for t in self.custom_tables
            ]
            material["excluded_tables"] = sorted(self.excluded_tables)
        return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def public_parameters(self) -> dict[str, Any]:
        """The parameters for the report: nothing secret is part of a RunConfig to begin with."""
        return {
            "org_url": self.org.base,
            "auth": self.auth.value,
            "contacts": self.contacts,
            "id_column": self.id_column,
            "types": [t.value for t in self.types],
            "date_from": self.dates.wire_from,
            "date_to": self.dates.wire_to,
            "page_size": self.page_size,
            "out": self.output_description,
            # Absolute: `sar-bulk status OUT` quotes it from wherever it is run.
            "work": str(self.out.absolute()) if self.published_elsewhere else None,
            "state": str(self.state),
            "restart": self.restart,
            "shard": str(self.shard) if self.shard else None,
            "rate": self.throttle.rate,
            "concurrency": self.throttle.concurrency,
            "window": self.window,
            "timeout": self.timeout,
            "retry": {
                "base": self.retry.base,
                "cap": self.retry.cap,
                "attempts": self.retry.attempts,
                "budget": self.retry.budget,
            },
            "max_pages": self.max_pages,
            "retry_after_cap": self.throttle.retry_after_cap,
            "max_answer_bytes": self.max_answer_bytes,
            "sources": list(self.sources) if self.sources is not None else AUTO,
            "replace": self.replace,
            "custom_tables": [
                {"name": t.name, "entity_set": t.entity_set, "filter": t.filter}
                for t in self.custom_tables
            ],
            "excluded_tables": sorted(self.excluded_tables),
            "realtime_wait": self.realtime_wait,
            "realtime_poll": self.realtime_poll,
            "max_parked": self.max_parked,
            "encryption": self.encryptor.description if self.encryptor else None,
            "received_column": self.received_column,
            "received_format": self.received_format,
            "extension_column": self.extension_column,
            "name_column": self.name_column,
            "controller_statement": "present" if self.statement else "missing",
            # Names of variables only: what they hold never reaches a RunConfig.
            "identities": [spec.public() for spec in self.identities],
            "fingerprint": self.fingerprint,
        }
