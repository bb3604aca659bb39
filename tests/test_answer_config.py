"""``[controller]`` of the run's TOML becomes ``RunConfig.statement``, or says it is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sar_bulk.answer import Statement, write_template
from sar_bulk.answer.sample import sample_statement
from sar_bulk.config import RUN_OPTIONS, RunConfig, resolve
from sar_bulk.errors import ConfigError

FLAGS = {"org": "https://contoso.crm4.dynamics.com", "contacts": "c.csv", "out": "out"}


def _config(path: Path | None) -> RunConfig:
    settings = resolve(RUN_OPTIONS, flags=FLAGS, environ={}, config_file=path)
    return RunConfig.from_settings(settings, {})


def _filled(template: str) -> str:
    """The template with every <placeholder> replaced by plain text, as a user would."""
    return re.sub(r"<([^<>]{3,})>", lambda m: f"our text for {m.group(1)[:20]}", template)


def test_a_filled_in_template_gives_the_statement(tmp_path: Path) -> None:
    path = write_template(tmp_path / "sar-bulk.toml")
    path.write_text(_filled(path.read_text(encoding="utf-8")), encoding="utf-8")
    config = _config(path)
    assert isinstance(config.statement, Statement)
    assert config.statement.name.startswith("our text for legal name")
    assert len(config.statement.purposes) == 2
    assert config.public_parameters()["controller_statement"] == "present"


def test_without_a_controller_table_the_statement_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[run]\nrate = 10\n", encoding="utf-8")
    for config in (_config(path), _config(None)):
        assert config.statement is None
        assert config.public_parameters()["controller_statement"] == "missing"


def test_an_untouched_template_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    path = write_template(tmp_path / "sar-bulk.toml")
    with pytest.raises(ConfigError, match=r"sar-bulk\.toml: config \[controller\]: name still"):
        _config(path)


def test_a_controller_table_is_not_taken_for_unknown_settings(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[controller]\nname = "Contoso Ltd"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="lacks address"):  # checked as a statement
        _config(path)


def test_the_demo_statement_says_it_is_a_sample() -> None:
    statement = sample_statement()
    assert statement.name == "Contoso Demo Ltd (sample statement)"
    assert statement.rights_note is not None
    assert "sample statement for the sar-bulk demo" in statement.rights_note


def test_a_draft_with_only_the_name_shows_in_the_demo_but_never_runs(tmp_path: Path) -> None:
    # The new user's path: init, fill in the name, see the answer in the demo. The rest of the
    # template reads "not filled in yet" there; a real run refuses the same file.
    from sar_bulk.answer.statement import NOT_FILLED_IN
    from sar_bulk.config import draft_statement_from_file

    path = write_template(tmp_path / "sar-bulk.toml")
    text = path.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^name = ".*"$', 'name = "Fabrikam Example GmbH"', text, count=1)
    path.write_text(text, encoding="utf-8")
    draft = draft_statement_from_file(path)
    assert draft is not None
    assert draft.name == "Fabrikam Example GmbH"
    assert draft.retention == NOT_FILLED_IN
    assert all(p.purpose == NOT_FILLED_IN for p in draft.purposes)
    with pytest.raises(ConfigError, match="placeholder"):
        _config(path)
    plain = tmp_path / "plain.toml"
    plain.write_text("[run]\nrate = 10\n", encoding="utf-8")
    assert draft_statement_from_file(plain) is None
