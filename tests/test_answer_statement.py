"""The controller's statement: loading, validation messages, the template and ``sar-bulk init``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from answer_samples import CONTROLLER

from sar_bulk.answer import Purpose, Transfer, load_statement
from sar_bulk.answer.statement import NOT_FILLED_IN, mark_unfilled
from sar_bulk.answer.template import TEMPLATE, write_template
from sar_bulk.cli import main
from sar_bulk.errors import ConfigError


def _table(**changes: Any) -> dict[str, Any]:
    table = dict(CONTROLLER)
    for key, value in changes.items():
        if value is None:
            table.pop(key)
        else:
            table[key] = value
    return table


def test_no_table_means_no_statement() -> None:
    assert load_statement(None) is None


def test_a_complete_table_loads_typed_and_trimmed() -> None:
    statement = load_statement(_table(name="  Contoso Ltd  "))
    assert statement is not None
    assert statement.name == "Contoso Ltd"
    assert statement.purposes[0] == Purpose("Sending our newsletter", "Consent, Article 6(1)(a)")
    assert statement.transfers == (Transfer("United States", "Standard contractual clauses"),)
    assert statement.dpo == "dpo@contoso.example"
    assert statement.rights_note is None


def test_no_transfers_is_said_with_an_empty_list_and_dpo_is_optional() -> None:
    statement = load_statement(_table(transfers=[], dpo=None))
    assert statement is not None
    assert statement.transfers == ()
    assert statement.dpo is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"retention": None}, r"lacks retention: Article 15"),
        ({"purposes": None, "transfers": None}, r"lacks purposes, transfers"),
        ({"colour": "blue"}, r"unknown key 'colour'"),
        ({"name": 42}, r"name must be text in quotes, not int"),
        ({"contact": "   "}, r"contact is empty"),
        ({"categories": []}, r"categories must be a non-empty list"),
        ({"recipients": "everyone"}, r"recipients must be a non-empty list"),
        ({"purposes": []}, r"purposes must be a list of tables"),
        ({"purposes": [{"purpose": "x"}]}, r"purposes\[0\]\.legal_basis is missing"),
        ({"purposes": [{"purpose": "x", "legal_basis": "y", "z": 1}]}, r"unknown key 'z'"),
        ({"transfers": ["US"]}, r"transfers\[0\] must be a table"),
        ({"retention": "<how long>"}, r"retention still holds the template's placeholder"),
    ],
)
def test_problems_name_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_statement(_table(**changes))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("contact", "Privacy Team <privacy@contoso.example>"),
        ("supervisory_authority", "Data Protection Commission <https://www.dataprotection.ie>"),
        ("retention", "Kept while < 2 years old, then deleted."),
    ],
)
def test_an_address_in_angle_brackets_is_no_placeholder(key: str, value: str) -> None:
    # "Name <address>" is how an e-mail address is written; the template's placeholders are
    # sentences ("<how to reach you ...>"), and only those are refused.
    statement = load_statement(_table(**{key: value}))
    assert statement is not None
    assert getattr(statement, key) == value
    assert mark_unfilled({key: value}) == {key: value}


def test_every_placeholder_of_the_template_is_still_one() -> None:
    def texts(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [t for item in value.values() for t in texts(item)]
        if isinstance(value, list):
            return [t for item in value for t in texts(item)]
        return [value]

    controller = tomllib.loads(TEMPLATE)["controller"]
    assert set(texts(mark_unfilled(controller))) == {NOT_FILLED_IN}


def test_a_table_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a table"):
        load_statement("Contoso")  # type: ignore[arg-type]


def test_the_untouched_template_is_valid_toml_but_refused() -> None:
    document = tomllib.loads(TEMPLATE)
    assert document["run"] == {}
    with pytest.raises(ConfigError, match="placeholder"):
        load_statement(document["controller"])


def test_the_filled_in_template_loads() -> None:
    filled = re.sub(r"<[^<>]+>", "filled in", TEMPLATE)
    statement = load_statement(tomllib.loads(filled)["controller"])
    assert statement is not None
    assert len(statement.purposes) == 2
    assert len(statement.transfers) == 1


def test_write_template_never_overwrites(tmp_path: Path) -> None:
    path = write_template(tmp_path / "a.toml")
    assert path.read_text(encoding="utf-8") == TEMPLATE
    path.write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="already exists"):
        write_template(path)
    assert path.read_text(encoding="utf-8") == "mine"


def test_init_command_writes_the_default_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    assert (tmp_path / "sar-bulk.toml").read_text(encoding="utf-8") == TEMPLATE
    assert "wrote sar-bulk.toml" in capsys.readouterr().out
    assert main(["init"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_init_command_takes_a_path(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "x" / "y.toml")]) == 2  # the folder does not exist
    assert main(["init", str(tmp_path / "y.toml")]) == 0
    assert (tmp_path / "y.toml").is_file()
