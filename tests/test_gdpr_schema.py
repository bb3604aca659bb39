"""Reading msdynmkt_gdprrequest's columns and options from metadata, by label."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.sources.gdpr_schema import GdprSchema, SchemaMismatch, label_key, parse_schema

ENTITY = {
    "EntitySetName": "msdynmkt_gdprrequests",
    "PrimaryIdAttribute": "msdynmkt_gdprrequestid",
    "PrimaryNameAttribute": "msdynmkt_name",
}


def label(text: str, *, user: bool = True) -> dict[str, Any]:
    if user:
        return {"UserLocalizedLabel": {"Label": text}, "LocalizedLabels": [{"Label": text}]}
    return {"UserLocalizedLabel": None, "LocalizedLabels": [{"Label": text}]}


def attributes(labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    rows = [
        {"LogicalName": n, "DisplayName": label(t), "AttributeOf": None} for n, t in labels.items()
    ]
    rows += [{"LogicalName": n, **v} for n, v in extra.items()]
    return {"value": rows}


LABELS = {
    "new_title": "Name",
    "new_kind": "DSR request type",
    "new_input": "DsrRequestInput",
    "new_progress": "dsrRequestProgress",
    "new_file": "DsrRequestData",
}


def picklists(kind: list[tuple[int, str]], progress: list[tuple[int, str]]) -> dict[str, Any]:
    def options(pairs: list[tuple[int, str]]) -> dict[str, Any]:
        return {"Options": [{"Value": v, "Label": label(t, user=False)} for v, t in pairs]}

    return {
        "value": [
            {"LogicalName": "new_kind", "OptionSet": options(kind)},
            {"LogicalName": "new_progress", "OptionSet": options(progress)},
        ]
    }


def test_columns_and_options_come_from_their_labels() -> None:
    schema = parse_schema(
        ENTITY,
        attributes(
            LABELS, new_kindname={"DisplayName": label("DsrRequestType"), "AttributeOf": "new_kind"}
        ),
        picklists([(7, "Delete"), (9, "Export")], [(1, "In Progress"), (2, "Completed")]),
    )
    assert schema == GdprSchema(
        entity_set="msdynmkt_gdprrequests",
        id_column="msdynmkt_gdprrequestid",
        name_column="new_title",
        type_column="new_kind",
        input_column="new_input",
        progress_column="new_progress",
        data_column="new_file",
        export_value=9,
        in_progress_value=1,
        completed_value=2,
    )


def test_name_falls_back_to_the_primary_name() -> None:
    labels = {k: v for k, v in LABELS.items() if v != "Name"}
    schema = parse_schema(
        ENTITY, attributes(labels), picklists([(1, "Export")], [(2, "Completed")])
    )
    assert schema.name_column == "msdynmkt_name"
    assert schema.in_progress_value is None


@pytest.mark.parametrize(
    ("labels", "kind", "progress", "message"),
    [
        (
            {**LABELS, "other": "DsrRequestInput"},
            [(1, "Export")],
            [(2, "Completed")],
            "2 columns labelled 'DsrRequestInput'",
        ),
        (
            {k: v for k, v in LABELS.items() if k != "new_file"},
            [(1, "Export")],
            [(2, "Completed")],
            "no column labelled 'DsrRequestData'",
        ),
        (LABELS, [(1, "Delete")], [(2, "Completed")], "no option labelled 'Export'"),
        (LABELS, [(1, "Export")], [(2, "InProgress")], "no option labelled 'Completed'"),
    ],
)
def test_what_does_not_match_the_documented_table_is_a_mismatch(
    labels: dict[str, str],
    kind: list[tuple[int, str]],
    progress: list[tuple[int, str]],
    message: str,
) -> None:
    with pytest.raises(SchemaMismatch, match=message):
        parse_schema(ENTITY, attributes(labels), picklists(kind, progress))


def test_label_key() -> None:
    assert label_key("DSR Request-Type ") == label_key("DsrRequestType") == "dsrrequesttype"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "value",
                    "LogicalName",
                    "DisplayName",
                    "UserLocalizedLabel",
                    "Label",
                    "LocalizedLabels",
                    "OptionSet",
                    "Options",
                    "Value",
                    "AttributeOf",
                    "EntitySetName",
                    "PrimaryIdAttribute",
                    "PrimaryNameAttribute",
                ]
            ),
            c,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(st.text(max_size=3), json_values)
    | st.fixed_dictionaries({"value": json_values}),
    st.fixed_dictionaries({"value": json_values}),
    st.fixed_dictionaries({"value": json_values}),
)
def test_any_metadata_shape_parses_or_is_a_mismatch(
    entity: dict[str, Any], attrs: dict[str, Any], picks: dict[str, Any]
) -> None:
    try:
        schema = parse_schema(entity, attrs, picks)
    except SchemaMismatch:
        return  # the only error a strange answer may cause
    assert all(isinstance(getattr(schema, f), str) for f in ("entity_set", "type_column"))
    assert isinstance(schema.export_value, int)
