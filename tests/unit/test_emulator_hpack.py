"""The APNs emulator's remembered Huffman decoding gives what hpack's own decoding gives."""

from __future__ import annotations

import hpack
import hpack.hpack
from hpack import huffman_table

import clarion.emulators.apns_connection  # installs the remembering decoder


def test_the_emulator_installs_its_decoder_once() -> None:
    installed = hpack.hpack.decode_huffman
    assert installed is not huffman_table.decode_huffman
    clarion.emulators.apns_connection._remember_long_huffman_values()
    assert hpack.hpack.decode_huffman is installed


def test_long_and_short_values_decode_as_hpack_decodes_them() -> None:
    # More distinct long values than the table keeps, each sent twice, and short ones between.
    values = [f"bearer {i:04d}." + "eyJhbGciOiJFUzI1NiJ9" * 8 for i in range(1300)]
    headers = []
    for i, value in enumerate(values):
        headers += [("authorization", value), ("apns-id", f"{i:08x}"), ("authorization", value)]
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    decoded = []
    for start in range(0, len(headers), 30):
        block = [hpack.NeverIndexedHeaderTuple(k, v) for k, v in headers[start : start + 30]]
        decoded += decoder.decode(encoder.encode(block, huffman=True), raw=False)
    assert [(k, v) for k, v in decoded] == headers
    assert huffman_table.decode_huffman(None) == hpack.hpack.decode_huffman(None) == b""
