"""Request heads and chunked framing, checked on buffered bytes (pure: no sockets, no clock).

The selector thread (``davserver.http.connections``) buffers a request head until its blank
line and calls :func:`scan_head` on it: sizes first (request line > 8 KiB → 414, header
section > 64 KiB or more than 100 fields → 431, before anything else looks at the request),
then the framing rules of RFC 9112 that a lax parser gets wrong and that let a second request
hide inside the first (request smuggling):

- every line ends in CRLF; a bare CR anywhere, a NUL or another control character in a field
  is a 400 (§2.2); an obs-fold continuation line is a 400 (§5.2);
- a field name is a token with no whitespace before the colon (§5.1: 400);
- ``Content-Length`` is digits only; several values must agree (§6.3 point 5: else 400);
- ``Transfer-Encoding`` together with ``Content-Length`` is a 400 (§6.3 point 3, and the
  connection is closed); ``chunked`` must be the final (here: the only) coding; any other
  coding is a 501; a ``Transfer-Encoding`` on an HTTP/1.0 request is faulty framing (§6.1).

cheroot then parses the same bytes in the worker; what it accepts of them is a subset of
what passes here, read the same way (lines split at LF, names compared case-insensitively).
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass
from typing import NoReturn

from davserver.errors import BadFraming, HeadersTooLarge, UnsupportedCoding, UriTooLong

MAX_REQUEST_LINE = 8 << 10
MAX_HEADER_BYTES = 64 << 10
MAX_HEADERS = 100
#: Hex digits in a chunk size: 2**60 bytes is more than any upload, and int() stays cheap.
MAX_CHUNK_SIZE_DIGITS = 15

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The header section, blank line included: token ":" value CRLF, values without CTLs.
_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n")
_FRAMING = re.compile(rb"^(content-length|transfer-encoding|expect):([^\r]*)\r$", re.I | re.M)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,%d})[ \t]*(?:;[^\r\n]*)?\r\n" % MAX_CHUNK_SIZE_DIGITS)


@dataclass(frozen=True, slots=True)
class Head:
    """What the selector needs to know of a complete request head."""

    size: int  # bytes from the start of the buffer through the blank line
    content_length: int  # 0 without a body or when chunked
    chunked: bool
    expect_continue: bool


def scan_head(buf: bytes | bytearray, resume: int = 0) -> Head | None:
    """The head at the start of ``buf`` if it is complete, ``None`` if more bytes may make it
    so; raises :class:`UriTooLong`, :class:`HeadersTooLarge` or :class:`BadFraming`.
    ``resume`` is the buffer length at the previous call, which found no end: the search
    for the blank line starts just before it, so a head sent a byte at a time is not
    searched from its start for every byte."""
    start = 2 if buf[:2] == b"\r\n" else 0  # one leading CRLF is ignored (RFC 9112 §2.2)
    line_end = buf.find(b"\n", start)
    if line_end < 0:
        if len(buf) - start > MAX_REQUEST_LINE:
            raise UriTooLong("request line longer than 8 KiB")
        return None
    if line_end - start - 1 > MAX_REQUEST_LINE:
        raise UriTooLong("request line longer than 8 KiB")
    end = _find_blank_line(buf, max(line_end, resume - 3))
    if end < 0:
        if len(buf) - line_end - 1 > MAX_HEADER_BYTES:
            raise HeadersTooLarge("request header fields larger than 64 KiB")
        return None
    if end - line_end - 1 > MAX_HEADER_BYTES:
        raise HeadersTooLarge("request header fields larger than 64 KiB")
    return _parse(bytes(buf[start:end]), end)


def _find_blank_line(buf: bytes | bytearray, after: int) -> int:
    """Index just past the first empty line at or after line end ``after``, or -1."""
    # A bare-LF blank line ends the head too, so that it is rejected at once rather than
    # waited on until the head deadline.
    crlf = buf.find(b"\n\r\n", after)
    # Only before the CRLF one: a body after the head is not searched.
    lf = buf.find(b"\n\n", after) if crlf < 0 else buf.find(b"\n\n", after, crlf + 1)
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


def _parse(head: bytes, size: int) -> Head:
    line_end = head.index(b"\n")
    request_line = head[: line_end - 1]
    fields = head[line_end + 1 :]
    # The common case in two C-speed passes: every field well-formed, then the three that
    # decide the framing picked out. Anything else takes the line-by-line path, which says
    # what is wrong.
    if head[line_end - 1] != 13 or b"\r" in request_line or not _FIELDS.fullmatch(fields):
        _refuse(head)
    if fields.count(b"\n") - 1 > MAX_HEADERS:
        raise HeadersTooLarge("more than 100 request header fields")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    expect: list[bytes] = []
    for name, value in _FRAMING.findall(fields):
        key = name.lower()
        if key == b"content-length":
            lengths.extend(v.strip(b" \t") for v in value.split(b","))
        elif key == b"transfer-encoding":
            codings.extend(c for v in value.split(b",") if (c := v.strip(b" \t").lower()))
        else:
            expect.append(value.strip(b" \t"))
    content_length = _content_length(lengths)
    chunked = False
    if codings:
        if lengths:
            raise BadFraming("both Content-Length and Transfer-Encoding")
        if request_line.endswith(b" HTTP/1.0"):
            raise BadFraming("Transfer-Encoding on an HTTP/1.0 request")
        if codings[-1] != b"chunked":
            raise BadFraming("chunked is not the final transfer coding")
        if len(codings) > 1:
            raise UnsupportedCoding("unsupported transfer coding")
        chunked = True
    # RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
    expect_continue = b", ".join(expect).lower() == b"100-continue"
    return Head(
        size,
        content_length,
        chunked,
        expect_continue and not request_line.endswith(b" HTTP/1.0"),
    )


def _refuse(head: bytes) -> NoReturn:
    """Raise the specific error of a head that failed the fast check."""
    lines = head.split(b"\n")
    lines.pop()  # after the final LF
    for line in lines:
        if not line.endswith(b"\r") or b"\r" in line[:-1]:
            raise BadFraming("a bare CR or LF in the request head")
    for raw in lines[1:-1]:
        line = raw[:-1]
        if line[:1] in (b" ", b"\t"):
            raise BadFraming("obsolete line folding in a request header")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadFraming("malformed request header field")
        if _BAD_VALUE_CHAR.search(value):
            raise BadFraming("control character in a request header value")
    raise BadFraming("malformed request head")  # not reached: the fast check is stricter


def _content_length(values: list[bytes]) -> int:
    if not values:
        return 0
    if any(not v.isdigit() or len(v) > 18 for v in values):
        raise BadFraming("malformed Content-Length")
    if len(set(values)) > 1 and len({int(v) for v in values}) > 1:
        raise BadFraming("conflicting Content-Length values")
    return int(values[0])


def parse_chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (with its CRLF); extensions are ignored. Raises
    :class:`BadFraming` for a negative, non-hex, overlong or unterminated size."""
    m = _CHUNK_LINE.fullmatch(line)
    if m is None:
        raise BadFraming("invalid chunk size in the request body")
    return int(m.group(1), 16)


def chunked_body_scan(buf: bytes | bytearray, pos: int) -> tuple[bool, int]:
    """Walks the chunks of a body from ``pos`` (the start of a chunk-size line): (True, _)
    if the body ends within ``buf`` (or is malformed there, which its reader will answer),
    else (False, where the next call resumes). Trailers are not awaited."""
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return len(buf) - pos > MAX_CHUNK_SIZE_DIGITS + 4096, pos  # overlong: let it fail
        try:
            size = parse_chunk_size(bytes(buf[pos : nl + 1]))
        except BadFraming:
            return True, pos
        if size == 0:
            return True, pos
        after = nl + 1 + size + 2
        if after > len(buf):
            return False, pos
        pos = after


def error_response(status: int, message: str, retry_after: int | None = None) -> bytes:
    """A complete short plain-text answer that closes the connection."""
    body = (message + "\n").encode("ascii", "replace")
    phrase = _phrase(status)
    retry = "" if retry_after is None else f"Retry-After: {retry_after}\r\n"
    return (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{retry}Connection: close\r\n\r\n"
    ).encode("ascii") + body


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
