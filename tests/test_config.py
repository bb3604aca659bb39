"""Settings: flag > environment > TOML file > default, each parsed and checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sar_bulk.config import RUN_OPTIONS, RunConfig, resolve
from sar_bulk.dataverse.auth import AuthKind
from sar_bulk.errors import ConfigError
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

ORG = "https://contoso.crm4.dynamics.com"


def settings(
    flags: dict[str, object] | None = None,
    environ: dict[str, str] | None = None,
    config_file: Path | None = None,
) -> dict[str, object]:
    return resolve(RUN_OPTIONS, flags=flags or {}, environ=environ or {}, config_file=config_file)


def config(**flags: object) -> RunConfig:
    given: dict[str, object] = {"org": ORG, "contacts": "c.csv"} | flags
    return RunConfig.from_settings(settings(given), {})


def test_defaults() -> None:
    run = config()
    assert run.types == ALL_TYPES
    assert run.auth is AuthKind.DEFAULT
    assert run.throttle.rate == 20.0
    assert run.throttle.concurrency is None
    assert run.timeout == 120.0
    assert run.state == Path("sar-bulk-out/.sar-bulk/state.sqlite")
    assert (run.retry.base, run.retry.cap, run.retry.attempts) == (0.5, 60.0, 8)


def test_precedence_flag_over_environment_over_file_over_default(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[run]\nrate = 5.0\nwindow = 7\ntimeout = 30\nlog_level = "debug"\n')
    merged = settings(
        flags={"rate": "9"},
        environ={"SAR_BULK_RATE": "8", "SAR_BULK_WINDOW": "6"},
        config_file=toml,
    )
    assert merged["rate"] == 9.0
    assert merged["window"] == 6
    assert merged["timeout"] == 30.0
    assert merged["log_level"] == "debug"
    assert merged["max_pages"] == 10_000


def test_top_level_toml_keys_and_lists(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(f'org = "{ORG}"\ncontacts = "x.csv"\ntypes = ["EmailSent", "EmailOpened"]\n')
    run = RunConfig.from_settings(settings(config_file=toml), {})
    assert run.types == (InteractionType.EmailOpened, InteractionType.EmailSent)


@pytest.mark.parametrize("key", ["token", "client_secret", "password"])
def test_secrets_in_the_file_are_refused(tmp_path: Path, key: str) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(f'{key} = "hunter2-CANARY"\n')
    with pytest.raises(ConfigError, match="secrets belong in the environment") as caught:
        settings(config_file=toml)
    assert "CANARY" not in str(caught.value)


def test_unknown_and_broken_files_are_clear_errors(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("ratee = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'ratee'"):
        settings(config_file=toml)
    toml.write_text("rate = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        settings(config_file=toml)
    with pytest.raises(ConfigError, match="does not exist"):
        settings(config_file=tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"rate": "0"}, "--rate"),
        ({"rate": "fast"}, "--rate"),
        ({"concurrency": "53"}, "at most 52"),
        ({"window": "-1"}, "--window"),
        ({"types": "EmailSent,EmailSnet"}, "EmailSnet"),
        ({"date_from": "2024-02-30"}, "not a real date"),
        ({"date_from": "31/12/2024"}, "MM-DD-YYYY or YYYY-MM-DD"),
        ({"date_from": "2024-05-01", "date_to": "2024-04-01"}, "after"),
        ({"org": "http://contoso.crm4.dynamics.com"}, "http"),
        ({"shard": "3/3"}, "shard"),
        ({"auth": "password"}, "--auth"),
        ({"retry_base": "10", "retry_cap": "1"}, "retry"),
        ({"received_format": "%H:%M"}, "--received-format: '%H:%M' must be a strptime format"),
        ({"received_format": "%d/%m"}, "day, month and year"),
        # Its year only in the locale's date: strptime warns of %d without a year (3.13).
        ({"received_format": "%x (%d)"}, "day, month and year"),
    ],
)
def test_bad_values_are_config_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**flags)


def test_missing_org_and_contacts_say_how_to_give_them() -> None:
    with pytest.raises(ConfigError, match="--org"):
        RunConfig.from_settings(settings({"contacts": "c.csv"}), {})
    with pytest.raises(ConfigError, match="--contacts"):
        RunConfig.from_settings(settings({"org": ORG}), {})


def test_environment_values_are_checked_and_named() -> None:
    with pytest.raises(ConfigError, match="SAR_BULK_WINDOW"):
        settings(environ={"SAR_BULK_WINDOW": "many"})


def test_dates_are_sent_as_mm_dd_yyyy() -> None:
    run = config(date_from="2024-01-31", date_to="12-31-2024")
    assert (run.dates.wire_from, run.dates.wire_to) == ("01-31-2024", "12-31-2024")


def test_shard_count_takes_the_index_from_the_job_index() -> None:
    given = settings({"org": ORG, "contacts": "c.csv", "shard_count": "4"})
    run = RunConfig.from_settings(given, {"JOB_COMPLETION_INDEX": "2"})
    assert run.shard is not None
    assert (run.shard.index, run.shard.count) == (2, 4)
    assert run.state.name == "state.shard-2-of-4.sqlite"
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX"):
        RunConfig.from_settings(given, {})
    both = settings({"org": ORG, "contacts": "c.csv", "shard_count": "4", "shard": "1/4"})
    with pytest.raises(ConfigError, match="not both"):
        RunConfig.from_settings(both, {})


def test_fingerprint_follows_what_changes_the_answer() -> None:
    base = config()
    assert base.fingerprint == config(rate="3", window="2").fingerprint
    assert base.fingerprint != config(date_from="2024-01-01").fingerprint
    assert base.fingerprint != config(types="EmailSent").fingerprint
    assert base.fingerprint != config(page_size="100").fingerprint
    assert base.fingerprint != config(org="https://fabrikam.crm.dynamics.com").fingerprint


def test_public_parameters_hold_no_secret() -> None:
    parameters = config().public_parameters()
    assert parameters["org_url"] == ORG
    flat = str(parameters).lower()
    assert "secret" not in flat
    assert "token" not in flat


# --- sources and their settings -----------------------------------------------------------------


def test_sources_default_to_auto_and_name_their_flag_when_wrong() -> None:
    assert config().sources is None
    assert config(sources="records,interactions").sources == ("interactions", "records")
    with pytest.raises(ConfigError, match=r"--sources: 'mail'.*unknown source"):
        config(sources="mail")


@pytest.mark.parametrize(
    ("text", "seconds"), [("6h", 21600.0), ("90m", 5400.0), ("45s", 45.0), ("120", 120.0)]
)
def test_realtime_wait_takes_a_duration(text: str, seconds: float) -> None:
    assert config(realtime_wait=text).source_settings.realtime_wait == seconds


def test_realtime_defaults_and_bad_durations() -> None:
    run = config()
    assert (run.realtime_wait, run.realtime_poll, run.max_parked) == (21600.0, 30.0, 10_000)
    for bad in ("0", "-1h", "soon", "h"):
        with pytest.raises(ConfigError, match="--realtime-wait"):
            config(realtime_wait=bad)


def test_custom_tables_come_from_toml_and_reach_the_sources(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(
        'sources = "records"\nexclude_tables = ["msdyn_journey"]\n'
        "[[records.tables]]\n"
        'name = "loyalty"\nentity_set = "new_loyalties"\n'
        'filter = "_new_contact_value eq {contact_id}"\n'
        "[[records.tables]]\n"
        'name = "tickets"\nentity_set = "new_tickets"\nfilter = "new_email eq {email}"\n'
    )
    run = RunConfig.from_settings(settings({"org": ORG, "contacts": "c.csv"}, config_file=toml), {})
    tables = run.source_settings.custom_tables
    assert [(t.name, t.entity_set) for t in tables] == [
        ("loyalty", "new_loyalties"),
        ("tickets", "new_tickets"),
    ]
    assert run.source_settings.excluded_tables == frozenset({"msdyn_journey"})
    assert run.sources == ("records",)
    assert run.public_parameters()["custom_tables"][1]["filter"] == "new_email eq {email}"
    assert run.fingerprint != config().fingerprint


@pytest.mark.parametrize(
    "body",
    [
        '[[records.tables]]\nname = "x"\nentity_set = "y"\n',  # no filter
        '[[records.tables]]\nname = "../x"\nentity_set = "y"\nfilter = "z"\n',
        "[records]\nviews = 1\n",
        '[[records.tables]]\nname = "x"\nentity_set = "y"\nfilter = "z"\n'
        '[[records.tables]]\nname = "x"\nentity_set = "w"\nfilter = "z"\n',
    ],
)
def test_bad_custom_tables_are_refused(tmp_path: Path, body: str) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(body)
    with pytest.raises(ConfigError, match=r"\[records\]"):
        settings({}, config_file=toml)


def test_replace_is_a_switch_reported_in_the_parameters() -> None:
    assert config().replace is False
    run = config(replace=True)
    assert run.replace is True
    assert run.public_parameters()["replace"] is True
    assert run.public_parameters()["sources"] == "auto"
    assert run.fingerprint == config().fingerprint  # how a question is answered, not which


def test_deadline_columns_reach_the_run_config() -> None:
    run = config(
        received_column="Arrived",
        received_format="%d/%m/%Y",
        extension_column="Why",
        name_column="Who",
    )
    assert (run.received_column, run.received_format) == ("Arrived", "%d/%m/%Y")
    assert (run.extension_column, run.name_column) == ("Why", "Who")
    assert run.public_parameters()["received_format"] == "%d/%m/%Y"
    assert config().received_column is None


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({}, {"SAR_BULK_ENCRYPT_TO": ""}, "SAR_BULK_ENCRYPT_TO: '' must name"),
        ({}, {"SAR_BULK_ENCRYPT_TO": " , "}, "SAR_BULK_ENCRYPT_TO: ' , ' must name"),
        ({"encrypt_to": [""]}, {}, "--encrypt-to: '' must name"),
        ({}, {"SAR_BULK_ENCRYPT_PASSPHRASE_ENV": ""}, "SAR_BULK_ENCRYPT_PASSPHRASE_ENV: '' must"),
        ({"encrypt_passphrase_env": " "}, {}, "--encrypt-passphrase-env: ' ' must name"),
    ],
)
def test_an_empty_encryption_setting_is_refused_not_taken_for_none(
    flags: dict[str, object], environ: dict[str, str], message: str
) -> None:
    # SAR_BULK_ENCRYPT_TO="$RECIPIENT" with RECIPIENT unset asked for encryption: writing the
    # dossiers in the clear instead would hand out personal data nobody meant to send unprotected.
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        settings(flags, environ)
    assert "plain, unencrypted zips" in str(caught.value)


def test_an_empty_encryption_setting_in_the_file_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("encrypt_to = []\n")
    with pytest.raises(ConfigError, match=r"encrypt_to in .*run\.toml: '' must name"):
        settings(config_file=toml)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAR_BULK_OUT": ""}, "SAR_BULK_OUT: '' must be"),
        ({"SAR_BULK_OUT": "  "}, "SAR_BULK_OUT: '  ' must be"),
        ({"SAR_BULK_STATE": ""}, "SAR_BULK_STATE: '' must be"),
        ({"SAR_BULK_WORK": ""}, "SAR_BULK_WORK: '' must be"),
    ],
)
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
    environ: dict[str, str], message: str
) -> None:
    # Path("") is ".": SAR_BULK_OUT="$DIR" with DIR unset wrote the dossiers (personal data)
    # and the state into whatever folder the run started in.
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        settings(environ=environ)
    assert "leave the setting out" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('run = "nightly"\n', r"run must be a table \(\[run\]\)"),
        ("run = [1]\n", r"run must be a table \(\[run\]\)"),
        ("rate = 5\n[run]\nrate = 6\n", r"rate is set twice.*top level and under \[run\]"),
    ],
)
def test_a_run_section_that_is_no_table_or_repeats_a_key_is_refused(
    tmp_path: Path, body: str, message: str
) -> None:
    # Both were silently ignored: the run went ahead on defaults, or on one of two values.
    toml = tmp_path / "run.toml"
    toml.write_text(body)
    with pytest.raises(ConfigError, match=message):
        settings(config_file=toml)
