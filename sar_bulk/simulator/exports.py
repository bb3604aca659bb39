"""The real-time export endpoints: create a subject request, download its file in chunks.

Usage (from webapi.py, after the common checks)::

    fields = parse_create(request, state, body)           # 400 before service protection
    response = create(request, state, table, "v9.2", fields, identity)   # 204 + OData-EntityId
    answer = prepare_download(request, state, row_id)      # later: await answer() -> 206/200

Create (documented: 204 with ``OData-EntityId``, 201 with the row under
``Prefer: return=representation``) accepts only ``msdynmkt_name``, ``msdynmkt_dsrrequesttype``
(an option value read from metadata) and ``msdynmkt_dsrrequestinput``; progress and the file are
the system's. Download with ``Range: bytes=a-b`` answers 206 with ``x-ms-file-size``,
``x-ms-file-name``, ``x-ms-chunk-size`` and at most ``file_chunk_size`` bytes (less than asked:
a client loops on what it got); without Range, 200 with the whole file up to
``whole_file_limit`` bytes, else 400 asking for chunks (assumption: Dataverse documents chunking
for files over 16 MB).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from sar_bulk.simulator import replies
from sar_bulk.simulator.gate import base_url
from sar_bulk.simulator.hashing import Draw, stable_digest
from sar_bulk.simulator.odata import parse_prefer, parse_select
from sar_bulk.simulator.realtime import FILE_NAME
from sar_bulk.simulator.refusal import (
    INVALID,
    NO_FILE,
    NOT_FOUND,
    OPTION_OUT_OF_RANGE,
    Refusal,
    json_answer,
)
from sar_bulk.simulator.rendering import render
from sar_bulk.simulator.state import SimulatorState
from sar_bulk.simulator.tables import Table

__all__ = ["Answer", "create", "parse_create", "prepare_download"]

# An answer whose checks are done and whose work waits until service protection admits it.
Answer = Callable[[], Awaitable[web.Response]]
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CREATE_COLUMNS = ("msdynmkt_name", "msdynmkt_dsrrequesttype", "msdynmkt_dsrrequestinput")


def parse_create(request: web.Request, state: SimulatorState, raw: bytes) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise Refusal(
            400,
            "0x80048d19",
            "A supported MIME type could not be found that matches the content type of the "
            f"payload ({content_type or 'none'!r}).",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refusal(
            400, "0x80048d19", "Error identified in Payload provided by the user: invalid JSON."
        ) from None
    if not isinstance(body, dict):
        raise Refusal(
            400, "0x80048d19", "Error identified in Payload provided by the user: not an object."
        )
    for name in body:
        if name not in _CREATE_COLUMNS:
            raise Refusal(
                400,
                NOT_FOUND,
                f"The property '{name}' does not exist on type "
                "'Microsoft.Dynamics.CRM.msdynmkt_gdprrequest' or is set by the system. Make "
                "sure to only use property names that are defined by the type.",
            )
    options = state.realtime.options
    kind = body.get("msdynmkt_dsrrequesttype")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise Refusal(
            400,
            INVALID,
            "msdynmkt_dsrrequesttype is required and must be an option value (Edm.Int32); read "
            "the values from the column's OptionSet.",
        )
    if kind not in (options.export, options.delete):
        raise Refusal(
            400,
            OPTION_OUT_OF_RANGE,
            f"A validation error occurred. The value {kind} of 'msdynmkt_dsrrequesttype' on "
            "record of type 'msdynmkt_gdprrequest' is outside the valid range.",
        )
    value = body.get("msdynmkt_dsrrequestinput")
    if not isinstance(value, str) or not value.strip():
        raise Refusal(
            400,
            INVALID,
            "msdynmkt_dsrrequestinput is required: the end user's e-mail address or phone number.",
        )
    name = body.get("msdynmkt_name", "")
    if not isinstance(name, str) or len(name) > 100 or len(value) > 100:
        raise Refusal(
            400,
            INVALID,
            "msdynmkt_name and msdynmkt_dsrrequestinput must be strings of at most 100 characters.",
        )
    return {"name": name, "type": kind, "input": value}


def create(
    request: web.Request,
    state: SimulatorState,
    table: Table,
    version: str,
    create: dict[str, Any],
    identity: str,
) -> web.Response:
    owner = Draw(stable_digest("user", identity)).guid()
    made = state.realtime.create(create["name"], create["type"], create["input"], owner)
    location = f"{base_url(request)}/api/data/{version}/{table.entity_set}({made.request_id})"
    headers = {"OData-EntityId": location, "Location": location}
    prefer = parse_prefer(request.headers.getall("Prefer", []))
    if prefer.return_representation:
        row = render(
            state.realtime.row(made), table, parse_select(request.query.get("$select")), prefer
        )
        context = f"{base_url(request)}/api/data/{version}/$metadata"
        body = {"@odata.context": f"{context}#{table.entity_set}/$entity", **row}
        return json_answer(201, body, {**headers, "Preference-Applied": "return=representation"})
    return web.Response(status=204, headers={"OData-Version": "4.0", **headers})


def prepare_download(request: web.Request, state: SimulatorState, row_id: str) -> Answer:
    realtime = state.realtime
    found = realtime.by_id(row_id)
    if found is None or realtime.file_id(found) is None:
        raise Refusal(
            404,
            NO_FILE,
            f"No file attachment found for attribute: msdynmkt_dsrrequestdata EntityId: {row_id}.",
            "not_found",
        )
    identifier = found.input
    wanted = request.headers.get("Range")
    match = _RANGE.fullmatch(wanted.strip()) if wanted else None
    if wanted is not None and match is None:
        raise Refusal(
            416, INVALID, f"The Range header '{wanted}' is not of the form bytes=first-last."
        )
    config = state.config

    async def download() -> web.Response:
        data = await asyncio.to_thread(realtime.export_file, identifier)
        size = len(data)
        headers = {
            "x-ms-file-size": str(size),
            "x-ms-file-name": FILE_NAME,
            "x-ms-chunk-size": str(config.file_chunk_size),
            "OData-Version": "4.0",
        }
        if match is None:
            if size > config.whole_file_limit:
                return replies.error(
                    400,
                    INVALID,
                    f"The file is {size} bytes, more than {config.whole_file_limit} can be "
                    "downloaded in one request: ask for it in chunks with a Range header.",
                )
            return web.Response(
                status=200, body=data, headers=headers, content_type="application/octet-stream"
            )
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
        if first >= size or last < first:
            return replies.error(
                416,
                INVALID,
                f"The range bytes={first}-{match[2]} is outside the file of {size} bytes.",
                {"Content-Range": f"bytes */{size}"},
            )
        # Less than asked for, as a server may: a client must loop on what it got.
        end = min(last, size - 1, first + config.file_chunk_size - 1)
        headers["Content-Range"] = f"bytes {first}-{end}/{size}"
        return web.Response(
            status=206,
            body=data[first : end + 1],
            headers=headers,
            content_type="application/octet-stream",
        )

    return download
