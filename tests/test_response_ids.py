"""Response ids that name their route (routing.responses.ids): round trip, and no altered id ever
decodes (every character position, every alphabet character), whatever base64 would tolerate."""

from __future__ import annotations

import string

from routing.responses.ids import PREFIXES, IdCodec, rewrite_in

ALPHABET = string.ascii_letters + string.digits + "-_"


def test_round_trip_and_prefixes_kept():
    codec = IdCodec(b"s" * 32)
    for prefix in ("resp_", "msg_", "fc_", "rs_"):
        upstream = prefix + "0123456789abcdef" * 3
        client_id = codec.encode("ROUTE_A", upstream)
        assert client_id.startswith(prefix) and client_id != upstream
        assert codec.decode(client_id) == ("ROUTE_A", upstream)
    assert codec.encode("ROUTE_A", "call_abc") == "call_abc"  # the model's own ids pass


def test_no_altered_id_decodes():
    codec = IdCodec(b"s" * 32)
    client_id = codec.encode("R", "resp_" + "ab" * 24)
    accepted = [position for position in range(len("resp_"), len(client_id)) for char in ALPHABET
                if char != client_id[position]
                and codec.decode(client_id[:position] + char + client_id[position + 1:]) is not None]
    assert accepted == []
    assert codec.decode(client_id + "A") is None and codec.decode(client_id[:-1]) is None
    assert IdCodec(b"t" * 32).decode(client_id) is None  # another gateway's secret


def test_rewrite_in_names_the_routes_and_restores_upstream_ids():
    codec = IdCodec(b"s" * 32)
    body = {"previous_response_id": codec.encode("A", "resp_1"),
            "input": [{"type": "function_call", "id": codec.encode("A", "fc_2"), "call_id": "call_3"},
                      {"role": "user", "content": "hi"}]}
    assert rewrite_in(codec, body) == {"A"}
    assert body["previous_response_id"] == "resp_1" and body["input"][0]["id"] == "fc_2"
    assert all(prefix.endswith("_") for prefix in PREFIXES)


def test_an_id_works_only_for_the_consumer_it_was_handed_to():
    codec = IdCodec(b"s" * 32)
    mine = codec.bind("team_a").encode("R", "resp_" + "cd" * 24)
    assert codec.bind("team_a").decode(mine) == ("R", "resp_" + "cd" * 24)
    assert codec.bind("team_b").decode(mine) is None
    assert codec.bind(None).decode(mine) is None and codec.decode(mine) is None

