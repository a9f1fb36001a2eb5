"""Tests for davserver.crypto.blobfmt: the blob stream format v1 (DESIGN.md section 5).

Covers the conformance vector byte for byte, round trips at every interesting size under any
chunking, hundreds of random ranged reads, and every way the object store could tamper with an
object (flipped bits, reordered, duplicated, dropped, appended or truncated segments, objects
from another file or version).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from davserver.crypto import (
    DEFAULT_SEG_LOG2,
    HEADER_AD_LEN,
    HEADER_LEN,
    MAGIC,
    TAG_LEN,
    AuthenticationFailed,
    RangePlan,
    SegmentDecryptor,
    SegmentEncryptor,
    check_header,
    ciphertext_size,
    decrypt_chunks,
    decrypt_range,
    encrypt_chunks,
    make_header,
    parse_header_ad,
    plan_range,
    random_key,
    segment_count,
)

# The conformance vector of docs/design.md (blob format v1), kept byte for byte in the repo.
VECTOR_PATH = Path(__file__).resolve().parents[1] / "vectors" / "blob-v1.json"

CK = bytes(range(32))
NONCE = bytes(range(0x64, 0x74))
SMALL = 8  # 256-byte segments keep the exhaustive tests fast


# -- helpers ---------------------------------------------------------------------------------


def load_vector() -> dict[str, Any]:
    if not VECTOR_PATH.is_file():
        pytest.fail(
            f"conformance vector not found at {VECTOR_PATH}; it belongs to the repository "
            "(docs/design.md section 5)"
        )
    data: dict[str, Any] = json.loads(VECTOR_PATH.read_text())
    return data


def pattern(size: int) -> bytes:
    return bytes((7 * i) % 256 for i in range(size))


def encrypt(plain: bytes, seg_log2: int = SMALL, ck: bytes = CK, nonce: bytes = NONCE) -> bytes:
    return b"".join(encrypt_chunks(ck, [plain], seg_log2, nonce))


def split(data: bytes, sizes: Iterator[int]) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = next(sizes)
        out.append(data[pos : pos + n])
        pos += n
    return out


def fixed(n: int) -> Iterator[int]:
    while True:
        yield n


def randoms(rng: random.Random, top: int) -> Iterator[int]:
    while True:
        yield rng.randint(1, top)


def decrypt_whole(
    blob: bytes, plain_size: int, ck: bytes = CK, header24: bytes | None = None
) -> bytes:
    """Read a full object: check the header, then decrypt every segment."""
    header24 = blob[:HEADER_AD_LEN] if header24 is None else header24
    return b"".join(decrypt_chunks(ck, header24, plain_size, [blob], with_header=True))


def decrypt_body(blob: bytes, plain_size: int, header24: bytes, ck: bytes = CK) -> bytes:
    """Read segments only (offset 56 onwards), as a range read of the whole file does."""
    return b"".join(decrypt_chunks(ck, header24, plain_size, [blob[HEADER_LEN:]]))


def segments(blob: bytes, seg_log2: int) -> list[bytes]:
    stride = (1 << seg_log2) + TAG_LEN
    body = blob[HEADER_LEN:]
    return [body[i : i + stride] for i in range(0, len(body), stride)]


# -- conformance vector ----------------------------------------------------------------------


def test_vector_reproduced_byte_for_byte() -> None:
    vec = load_vector()
    ck = bytes.fromhex(vec["content_key_hex"])
    nonce = bytes.fromhex(vec["file_nonce_hex"])
    assert ck == CK and nonce == NONCE and vec["seg_log2"] == SMALL
    plain = pattern(vec["plaintext_len"])
    blob = encrypt(plain, vec["seg_log2"], ck, nonce)
    assert blob[:HEADER_LEN].hex() == vec["header_hex"]
    assert make_header(ck, vec["seg_log2"], nonce).hex() == vec["header_hex"]
    assert len(blob) == vec["blob_len"] == ciphertext_size(len(plain), vec["seg_log2"])
    assert hashlib.sha256(blob).hexdigest() == vec["blob_sha256"]
    assert blob.hex() == vec["blob_hex"]


def test_vector_empty_file() -> None:
    vec = load_vector()["empty_file"]
    assert vec["plaintext_len"] == 0
    blob = encrypt(b"")
    assert len(blob) == vec["blob_len"] == HEADER_LEN + TAG_LEN
    assert blob.hex() == vec["blob_hex"]


def test_vector_decrypts() -> None:
    vec = load_vector()
    blob = bytes.fromhex(vec["blob_hex"])
    plain = pattern(vec["plaintext_len"])
    assert decrypt_whole(blob, len(plain)) == plain
    assert decrypt_body(blob, len(plain), blob[:24]) == plain
    empty = bytes.fromhex(vec["empty_file"]["blob_hex"])
    assert decrypt_whole(empty, 0) == b""


def test_vector_segments_follow_the_spec_independently() -> None:
    """Re-derive each segment with raw PyNaCl calls from the spec text, not our code."""
    vec = load_vector()
    blob = bytes.fromhex(vec["blob_hex"])
    plain = pattern(vec["plaintext_len"])
    header24 = MAGIC + bytes([1, 1, 8, 0]) + NONCE
    commit = hashlib.blake2b(header24, digest_size=32, key=CK, person=b"wdv-commit-v1")
    assert blob[:HEADER_LEN] == header24 + commit.digest()
    segs = segments(blob, 8)
    assert len(segs) == 2
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        nonce = NONCE + i.to_bytes(7, "big") + (b"\x01" if last else b"\x00")
        chunk = plain[i * 256 : (i + 1) * 256]
        assert seg == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            chunk, header24, nonce, CK
        )


# -- header ----------------------------------------------------------------------------------


def test_header_layout_and_parse() -> None:
    header = make_header(CK, 16, NONCE)
    assert len(header) == HEADER_LEN == 56
    assert header[:8] == b"WDVB\x01\x01\x10\x00"
    assert parse_header_ad(header[:24]) == (16, NONCE)
    check_header(CK, header, header[:24])


def test_header_nonce_is_random_by_default() -> None:
    assert make_header(CK)[8:24] != make_header(CK)[8:24]
    assert make_header(CK)[6] == DEFAULT_SEG_LOG2


@pytest.mark.parametrize(
    "index, value",
    [(0, ord("X")), (3, 0), (4, 0), (4, 2), (5, 0), (5, 2), (6, 7), (6, 25), (6, 255), (7, 1)],
)
def test_parse_header_ad_rejects_bad_fields(index: int, value: int) -> None:
    header24 = bytearray(make_header(CK, 16, NONCE)[:24])
    header24[index] = value
    with pytest.raises(AuthenticationFailed):
        parse_header_ad(bytes(header24))


def test_parse_header_ad_rejects_wrong_length() -> None:
    header24 = make_header(CK, 16, NONCE)[:24]
    for bad in (b"", header24[:23], header24 + b"\x00", make_header(CK)):
        with pytest.raises(AuthenticationFailed):
            parse_header_ad(bad)


def test_make_header_rejects_bad_arguments() -> None:
    for seg_log2 in (7, 25, -1):
        with pytest.raises(ValueError):
            make_header(CK, seg_log2)
    with pytest.raises(ValueError):
        make_header(CK, 16, NONCE[:15])
    with pytest.raises(ValueError):
        make_header(CK[:16])


def test_check_header_rejects_every_flipped_bit() -> None:
    header = make_header(CK, SMALL, NONCE)
    for i in range(HEADER_LEN):
        for bit in range(8):
            bad = bytearray(header)
            bad[i] ^= 1 << bit
            with pytest.raises(AuthenticationFailed):
                check_header(CK, bytes(bad), header[:24])


def test_check_header_rejects_other_key_other_row_and_bad_lengths() -> None:
    header = make_header(CK, SMALL, NONCE)
    other = make_header(CK, SMALL)  # same key, another version's nonce
    with pytest.raises(AuthenticationFailed):
        check_header(random_key(), header, header[:24])
    with pytest.raises(AuthenticationFailed):
        check_header(CK, other, header[:24])
    with pytest.raises(AuthenticationFailed):
        check_header(CK, header, other[:24])
    for bad in (header[:55], header + b"\x00", b""):
        with pytest.raises(AuthenticationFailed):
            check_header(CK, bad, header[:24])
    with pytest.raises(AuthenticationFailed):
        check_header(CK[:31], header, header[:24])


# -- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, count",
    [(0, 1), (1, 1), (255, 1), (256, 1), (257, 2), (512, 2), (513, 3), (256 * 10 + 3, 11)],
)
def test_segment_count_and_ciphertext_size(size: int, count: int) -> None:
    assert segment_count(size, 8) == count
    assert ciphertext_size(size, 8) == 56 + size + 16 * count
    assert len(encrypt(pattern(size))) == ciphertext_size(size, 8)


def test_segment_count_default_segment() -> None:
    assert segment_count(2**16, 16) == 1
    assert segment_count(2**16 + 1, 16) == 2
    assert ciphertext_size(10 * 2**30, 16) == 56 + 10 * 2**30 + 16 * 10 * 2**14
    with pytest.raises(ValueError):
        segment_count(-1, 16)


# -- round trips -----------------------------------------------------------------------------


def sizes_for(seg_log2: int) -> list[int]:
    s = 1 << seg_log2
    return [0, 1, s - 1, s, s + 1, 2 * s, 3 * s + 17]


CASES = [(SMALL, size) for size in sizes_for(SMALL)] + [
    (DEFAULT_SEG_LOG2, size) for size in sizes_for(DEFAULT_SEG_LOG2)
]


@pytest.mark.parametrize("seg_log2, size", CASES)
def test_round_trip_independent_of_chunking(seg_log2: int, size: int) -> None:
    rng = random.Random(size * 31 + seg_log2)
    plain = rng.randbytes(size)
    reference = encrypt(plain, seg_log2)
    assert len(reference) == ciphertext_size(size, seg_log2)
    chunkings = [[plain], split(plain, fixed(7)), split(plain, randoms(rng, 3 << seg_log2))]
    if size <= 3 * 256 + 17 or seg_log2 == SMALL:
        chunkings.append(split(plain, fixed(1)))
    chunkings.append([b"", *split(plain, fixed(1 << seg_log2)), b""])
    for chunks in chunkings:
        assert b"".join(encrypt_chunks(CK, chunks, seg_log2, NONCE)) == reference
    assert decrypt_whole(reference, size) == plain
    assert decrypt_body(reference, size, reference[:24]) == plain
    # The decryptor is just as indifferent to how the ciphertext arrives.
    for sizes in (fixed(1), fixed(7), randoms(rng, 5 << seg_log2)):
        if size > 4 * 256 and next(sizes) == 1:
            continue  # one-byte feeding of 64 KiB objects adds time, not coverage
        chunks = split(reference, sizes)
        got = b"".join(decrypt_chunks(CK, reference[:24], size, chunks, with_header=True))
        assert got == plain


def test_no_empty_tail_segment_after_exact_multiple() -> None:
    blob = encrypt(pattern(512))
    segs = segments(blob, SMALL)
    assert [len(s) for s in segs] == [256 + 16, 256 + 16]


def test_encryptor_holds_back_exactly_one_segment() -> None:
    enc = SegmentEncryptor(CK, SMALL, NONCE)
    assert enc.header == make_header(CK, SMALL, NONCE)
    assert enc.header_ad == enc.header[:24]
    assert enc.update(pattern(256)) == b""  # might be the last segment
    assert len(enc.update(b"x")) == 256 + 16  # now segment 0 is known not to be last
    assert enc.update(b"") == b""
    assert len(enc.update(bytes(255))) == 0  # segment 1 is full but could still be last
    # 256 buffered + 513 new = 769: three segments are now known not to be last.
    assert len(enc.update(bytes(513))) == 3 * (256 + 16)
    assert enc.plain_size == 256 + 1 + 255 + 513
    assert len(enc.finalize()) == 1 + 16
    with pytest.raises(ValueError):
        enc.update(b"more")
    with pytest.raises(ValueError):
        enc.finalize()


def test_encryptor_accepts_one_large_chunk() -> None:
    """One 8 MiB update (a multipart part) in one call; timing lives in bench/, not here."""
    data = bytes(8 * 2**20)
    enc = SegmentEncryptor(random_key(), SMALL)
    out = enc.update(data)
    assert len(out) == (len(data) // 256 - 1) * (256 + 16)
    assert len(enc.finalize()) == 256 + 16


def test_fresh_nonce_means_different_ciphertext() -> None:
    plain = pattern(300)
    ck = random_key()
    first = b"".join(encrypt_chunks(ck, [plain], SMALL))
    second = b"".join(encrypt_chunks(ck, [plain], SMALL))
    assert first[8:24] != second[8:24]
    assert first[HEADER_LEN:] != second[HEADER_LEN:]


# -- ranges ----------------------------------------------------------------------------------


def read_range(blob: bytes, plain_size: int, start: int, end: int, seg_log2: int) -> bytes:
    plan = plan_range(start, end, plain_size, seg_log2)
    wire = blob[plan.byte_start : plan.byte_end + 1]  # what one ranged GET returns
    dec = SegmentDecryptor(CK, blob[:24], plain_size, plan.first_segment, plan.last_segment)
    out = bytearray()
    for chunk in split(wire, fixed(97)):
        out += dec.feed(chunk)
    out += dec.finish()
    return bytes(out[plan.skip : plan.skip + plan.length])


@pytest.mark.parametrize("seg_log2, size", [(8, 1), (8, 256), (8, 300), (8, 4099), (16, 200_001)])
def test_random_ranges(seg_log2: int, size: int) -> None:
    rng = random.Random(20240601 + size)
    plain = rng.randbytes(size)
    blob = encrypt(plain, seg_log2)
    s = 1 << seg_log2
    probes = [(0, size - 1), (0, 0), (size - 1, size - 1)]
    probes += [(b, b) for b in range(s - 1, size, s)]  # last byte of each segment
    probes += [(b, min(b + 1, size - 1)) for b in range(s - 1, size, s)]  # straddling
    for _ in range(200):
        a = rng.randrange(size)
        probes.append((a, rng.randrange(a, min(size, a + rng.choice([1, 10, s, 4 * s])))))
    for a, b in probes:
        assert read_range(blob, size, a, b, seg_log2) == plain[a : b + 1], (a, b)
        plan = plan_range(a, b, size, seg_log2)
        wire = blob[plan.byte_start : plan.byte_end + 1]
        got = b"".join(decrypt_range(CK, blob[:24], size, plan, split(wire, fixed(1000))))
        assert got == plain[a : b + 1]


def test_plan_range_values() -> None:
    # 1000 bytes in 256-byte segments: N = 4, L = 56 + 1000 + 64 = 1120, stride 272.
    assert plan_range(0, 999, 1000, 8) == RangePlan(0, 3, 56, 1119, 0, 1000)
    assert plan_range(256, 511, 1000, 8) == RangePlan(1, 1, 328, 599, 0, 256)
    assert plan_range(300, 300, 1000, 8) == RangePlan(1, 1, 328, 599, 44, 1)
    assert plan_range(255, 256, 1000, 8) == RangePlan(0, 1, 56, 599, 255, 2)
    assert plan_range(999, 999, 1000, 8) == RangePlan(3, 3, 872, 1119, 231, 1)


@pytest.mark.parametrize(
    "start, end, size", [(-1, 0, 10), (5, 4, 10), (0, 10, 10), (10, 10, 10), (0, 0, 0)]
)
def test_plan_range_rejects_bad_ranges(start: int, end: int, size: int) -> None:
    with pytest.raises(ValueError):
        plan_range(start, end, size, 8)


def test_decryptor_rejects_bad_segment_window() -> None:
    header24 = make_header(CK, SMALL, NONCE)[:24]
    for first, last in ((-1, None), (2, 1), (0, 2), (2, None)):
        with pytest.raises(ValueError):
            SegmentDecryptor(CK, header24, 300, first, last)
    with pytest.raises(ValueError):
        SegmentDecryptor(CK, header24, 300, 1, with_header=True)


# -- streaming discipline --------------------------------------------------------------------


def test_decryptor_releases_nothing_before_a_segment_verifies() -> None:
    blob = encrypt(pattern(600))
    dec = SegmentDecryptor(CK, blob[:24], 600, with_header=True)
    first_segment_end = HEADER_LEN + 256 + 16
    released = b"".join(dec.feed(blob[i : i + 1]) for i in range(first_segment_end - 1))
    assert released == b""
    assert dec.feed(blob[first_segment_end - 1 : first_segment_end]) == pattern(256)


def test_finish_returns_bytes_and_feed_after_finish_is_refused() -> None:
    blob = encrypt(pattern(300))
    dec = SegmentDecryptor(CK, blob[:24], 300)
    assert dec.feed(blob[HEADER_LEN:]) == pattern(300)
    assert dec.finish() == b""
    with pytest.raises(ValueError):
        dec.feed(b"x")


def test_decryptor_fails_before_releasing_a_tampered_segment() -> None:
    blob = bytearray(encrypt(pattern(600)))
    blob[HEADER_LEN + 256 + 16 - 1] ^= 1  # last tag byte of segment 0
    dec = SegmentDecryptor(CK, bytes(blob[:24]), 600, with_header=True)
    released = bytearray()
    with pytest.raises(AuthenticationFailed):
        for i in range(len(blob)):
            released += dec.feed(bytes(blob[i : i + 1]))
    assert released == b""
    with pytest.raises(AuthenticationFailed):  # a failed decryptor stays failed
        dec.feed(b"")
    with pytest.raises(AuthenticationFailed):
        dec.finish()


# -- tampering by the object store -----------------------------------------------------------


def must_fail(blob: bytes, plain_size: int, header24: bytes, ck: bytes = CK) -> None:
    """Both read paths (whole object with header; segments only) must reject ``blob``."""
    with pytest.raises(AuthenticationFailed):
        decrypt_whole(blob, plain_size, ck, header24)
    if len(blob) >= HEADER_LEN:
        with pytest.raises(AuthenticationFailed):
            decrypt_body(blob, plain_size, header24, ck)


@pytest.mark.parametrize("size", [0, 300, 512])
def test_every_flipped_bit_in_the_object_is_detected(size: int) -> None:
    plain = pattern(size)
    blob = encrypt(plain)
    header24 = blob[:24]
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(AuthenticationFailed):
                decrypt_whole(bytes(bad), size, header24=header24)
            if i >= HEADER_LEN:
                with pytest.raises(AuthenticationFailed):
                    decrypt_body(bytes(bad), size, header24)


def test_every_flipped_bit_in_the_indexed_header24_is_detected() -> None:
    """The prefix cached in the version row is the AD of every segment: it must match."""
    blob = encrypt(pattern(300))
    for i in range(HEADER_AD_LEN):
        for bit in range(8):
            bad = bytearray(blob[:24])
            bad[i] ^= 1 << bit
            must_fail(blob, 300, bytes(bad))


def test_swapped_segments() -> None:
    blob = encrypt(pattern(256 * 3))
    s = segments(blob, SMALL)
    must_fail(blob[:HEADER_LEN] + s[1] + s[0] + s[2], 768, blob[:24])
    must_fail(blob[:HEADER_LEN] + s[0] + s[2] + s[1], 768, blob[:24])


def test_duplicated_segment() -> None:
    blob = encrypt(pattern(256 * 3))
    s = segments(blob, SMALL)
    must_fail(blob[:HEADER_LEN] + s[0] + s[0] + s[1] + s[2], 768, blob[:24])
    must_fail(blob[:HEADER_LEN] + s[0] + s[0] + s[2], 768, blob[:24])  # same length


def test_dropped_segment() -> None:
    blob = encrypt(pattern(256 * 3))
    s = segments(blob, SMALL)
    must_fail(blob[:HEADER_LEN] + s[0] + s[2], 768, blob[:24])
    must_fail(blob[:HEADER_LEN] + s[1] + s[2], 768, blob[:24])


def test_appended_data() -> None:
    blob = encrypt(pattern(300))
    s = segments(blob, SMALL)
    for extra in (b"\x00", s[0], s[1], blob):
        must_fail(blob + extra, 300, blob[:24])
    empty = encrypt(b"")
    must_fail(empty + segments(empty, SMALL)[0], 0, empty[:24])
    # Extra bytes arriving in a later read than the genuine end are caught too.
    dec = SegmentDecryptor(CK, blob[:24], 300, with_header=True)
    assert dec.feed(blob) == pattern(300)
    with pytest.raises(AuthenticationFailed):
        dec.feed(b"\x00")


def test_every_truncation_is_detected() -> None:
    for size in (0, 300, 512):
        blob = encrypt(pattern(size))
        for cut in range(len(blob)):
            with pytest.raises(AuthenticationFailed):
                decrypt_whole(blob[:cut], size, header24=blob[:24])
            if cut >= HEADER_LEN:
                with pytest.raises(AuthenticationFailed):
                    decrypt_body(blob[:cut], size, blob[:24])


def test_truncation_at_a_boundary_fails_even_with_a_matching_size() -> None:
    """If the reader were told the shorter size, the missing last flag still gives it away."""
    blob = encrypt(pattern(512))
    s = segments(blob, SMALL)
    must_fail(blob[:HEADER_LEN] + s[0], 256, blob[:24])
    # ... and a short final segment cannot be presented as a full middle one either.
    blob3 = encrypt(pattern(600))
    s3 = segments(blob3, SMALL)
    must_fail(blob3[:HEADER_LEN] + s3[0] + s3[1], 512, blob3[:24])


def test_wrong_plain_size_is_detected() -> None:
    blob = encrypt(pattern(300))
    for size in (0, 1, 255, 256, 299, 301, 512, 513):
        must_fail(blob, size, blob[:24])


def test_blob_from_another_file_or_version() -> None:
    plain = pattern(300)
    blob = encrypt(plain)
    other_key = encrypt(plain, ck=random_key())  # another file: other CK, same nonce
    other_version = encrypt(plain, nonce=bytes(16))  # same CK (hypothetically), other nonce
    must_fail(other_key, 300, blob[:24])
    must_fail(other_version, 300, blob[:24])
    must_fail(blob, 300, blob[:24], ck=random_key())
    # Splicing: the header of this version over the segments of another.
    must_fail(blob[:HEADER_LEN] + other_version[HEADER_LEN:], 300, blob[:24])
    # Another header over this version's segments: caught by the header check. (A read of
    # the segments alone never looks at the stored header, and its bytes are all genuine.)
    spliced = other_version[:HEADER_LEN] + blob[HEADER_LEN:]
    with pytest.raises(AuthenticationFailed):
        decrypt_whole(spliced, 300, header24=blob[:24])
    assert decrypt_body(spliced, 300, blob[:24]) == plain


def test_ranged_read_of_the_wrong_segment_fails() -> None:
    blob = encrypt(pattern(256 * 4))
    s = segments(blob, SMALL)
    header24 = blob[:24]
    for wanted, served in ((1, 2), (2, 1), (0, 3), (3, 0)):
        dec = SegmentDecryptor(CK, header24, 1024, wanted, wanted)
        with pytest.raises(AuthenticationFailed):
            dec.feed(s[served])
            dec.finish()


def test_ranged_read_ending_early_or_running_over_fails() -> None:
    blob = encrypt(pattern(256 * 4))
    s = segments(blob, SMALL)
    dec = SegmentDecryptor(CK, blob[:24], 1024, 1, 2)
    assert dec.feed(s[1]) == pattern(1024)[256:512]
    with pytest.raises(AuthenticationFailed):
        dec.finish()  # segment 2 never arrived
    dec = SegmentDecryptor(CK, blob[:24], 1024, 1, 2)
    with pytest.raises(AuthenticationFailed):
        dec.feed(s[1] + s[2] + s[3][:1])  # a byte past the requested window


def test_decryptor_rejects_bad_key_or_header24() -> None:
    header24 = make_header(CK, SMALL, NONCE)[:24]
    with pytest.raises(AuthenticationFailed):
        SegmentDecryptor(CK[:31], header24, 10)
    with pytest.raises(AuthenticationFailed):
        SegmentDecryptor(CK, header24[:23], 10)
    with pytest.raises(AuthenticationFailed):
        SegmentDecryptor(CK, b"XXXX" + header24[4:], 10)


# -- ranges that fetch the header (reads verify it, davserver.vault.reader) ------------------


def test_plan_range_with_header_starts_at_zero_only_in_segment_zero() -> None:
    # 1000 bytes in 256-byte segments: the header comes along from byte 0 in segment 0 only.
    assert plan_range(0, 999, 1000, 8, header=True) == RangePlan(0, 3, 0, 1119, 0, 1000, True)
    assert plan_range(255, 256, 1000, 8, header=True) == RangePlan(0, 1, 0, 599, 255, 2, True)
    assert plan_range(256, 511, 1000, 8, header=True) == plan_range(256, 511, 1000, 8)
    assert not plan_range(999, 999, 1000, 8, header=True).with_header


@pytest.mark.parametrize("seg_log2, size", [(8, 1), (8, 300), (8, 4099), (16, 200_001)])
def test_ranges_with_header_decrypt_and_check_it(seg_log2: int, size: int) -> None:
    rng = random.Random(size)
    plain = rng.randbytes(size)
    blob = encrypt(plain, seg_log2)
    for a, b in [(0, size - 1), (0, 0), (min(5, size - 1), size - 1), (size - 1, size - 1)]:
        plan = plan_range(a, b, size, seg_log2, header=True)
        wire = blob[plan.byte_start : plan.byte_end + 1]
        got = b"".join(decrypt_range(CK, blob[:24], size, plan, split(wire, fixed(77))))
        assert got == plain[a : b + 1]


@pytest.mark.parametrize("offset", [0, 3, 4, 5, 6, 7, 8, 23, 24, 40, 55])
def test_range_with_header_rejects_any_damaged_header_byte(offset: int) -> None:
    plain = pattern(1000)
    blob = encrypt(plain)
    header24 = blob[:24]  # as the version row holds it
    damaged = bytearray(blob)
    damaged[offset] ^= 0x40
    plan = plan_range(0, 99, len(plain), SMALL, header=True)
    wire = bytes(damaged[plan.byte_start : plan.byte_end + 1])
    dec = SegmentDecryptor(CK, header24, len(plain), 0, plan.last_segment, with_header=True)
    # Nothing is released: the header is checked before the first segment is opened.
    with pytest.raises(AuthenticationFailed):
        dec.feed(wire)
    with pytest.raises(AuthenticationFailed):
        b"".join(decrypt_range(CK, header24, len(plain), plan, [wire]))


def test_range_with_header_rejects_the_header_of_another_key_or_version() -> None:
    plain = pattern(700)
    blob = encrypt(plain)
    other_key = encrypt(plain, ck=random_key())
    other_nonce = encrypt(plain, nonce=bytes(16))
    plan = plan_range(0, 10, len(plain), SMALL, header=True)
    for header in (other_key[:HEADER_LEN], other_nonce[:HEADER_LEN]):
        wire = header + blob[HEADER_LEN : plan.byte_end + 1]
        with pytest.raises(AuthenticationFailed):
            b"".join(decrypt_range(CK, blob[:24], len(plain), plan, [wire]))
    # A zeroed magic in the indexed prefix is refused before anything is read.
    with pytest.raises(AuthenticationFailed):
        SegmentDecryptor(CK, bytes(4) + blob[4:24], len(plain), with_header=True)
