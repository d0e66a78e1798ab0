"""Multipart form bodies parsed in memory: each part is a slice of the body the server already
holds (and has counted in its memory budget), never a temporary file.

    parts = parse_multipart(body, request.headers["content-type"], max_files=16)
    for part in parts:
        part.field, part.filename, part.data      # filename None: a plain form field

python-multipart's push parser (the one Starlette's form parsing uses), fed the whole body at
once. The parts together hold at most the body's size again, so a body of ``n`` bytes costs at
most ``2 n`` while its parts are in use (:data:`MEMORY_FACTOR`). Every problem is an
:class:`~segsynth.serve.uploads.UploadError` 400 ``bad_multipart`` that says what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from segsynth.serve.uploads import UploadError

MEMORY_FACTOR = 2  # the body and its parts' bytes, both held while the images are read


@dataclass(frozen=True)
class Part:
    field: str  # the form field's name
    filename: str | None  # None: a plain form field, not a file
    data: bytes


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _refuse(what: str) -> UploadError:
    return UploadError(400, "bad_multipart", f"the multipart body could not be parsed ({what}); send the images "
                                             "as multipart/form-data file fields (curl -F file=@photo.jpg)")


def parse_multipart(body: bytes, content_type: str, max_files: int, max_fields: int = 32) -> list[Part]:
    """The parts of a ``multipart/form-data`` ``body`` in order; at most ``max_files`` file parts
    and ``max_fields`` plain fields (400 beyond, as for a body without a boundary or cut off before
    its closing boundary)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise _refuse("the Content-Type header names no boundary")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    header_name, header_value = bytearray(), bytearray()
    chunks: list[bytes] = []
    counts = {"files": 0, "fields": 0}
    current: dict = {}
    ended = []

    def on_part_begin() -> None:
        headers.clear()
        chunks.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise _refuse("a part has no Content-Disposition name")
        kind = "files" if b"filename" in options else "fields"
        counts[kind] += 1
        limit = max_files if kind == "files" else max_fields
        if counts[kind] > limit:
            raise _refuse(f"more than {limit} {'file' if kind == 'files' else 'plain'} field(s)")
        current["field"] = _text(options[b"name"])
        current["filename"] = _text(options[b"filename"]) if kind == "files" else None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunks.append(data[start:end])

    def on_part_end() -> None:
        parts.append(Part(current["field"], current["filename"], b"".join(chunks)))  # one chunk: no copy
        chunks.clear()

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": lambda: ended.append(True)})
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise _refuse(str(e) or type(e).__name__) from None
    if not ended:
        raise _refuse("the body ends before its closing boundary")
    return parts
