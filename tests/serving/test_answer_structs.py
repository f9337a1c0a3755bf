"""The Python client's answer types (``p13n/client/_types.py``) read only what the server's answer structs
(``serving/responses.py``) send, in the same JSON shapes: the client may not import the server, so its
mirror is checked here instead. No Serve instance: the structs' types are compared, and a server answer
encoded as the API encodes it decodes into the client's type."""

from __future__ import annotations

import msgspec
import pytest

from p13n import client
from serving import responses as server

PAIRS = [(server.ScoreAnswer, client.ScoreResult), (server.RewriteAnswer, client.RewriteResult),
         (server.EventsAnswer, client.EventsResult), (server.UserProfile, client.UserProfile),
         (server.Deleted, client.Deleted)]  # fmt: skip


def shape(info: msgspec.inspect.Type):
    """The JSON shape of a type: a struct's ``{key: shape}``, ``[shape]`` for a list, ``{"*": shape}`` for a
    dict, the scalar's name; optional (null or left out) values by what they are when present."""
    if isinstance(info, msgspec.inspect.StructType):
        return {f.encode_name: shape(f.type) for f in info.fields}
    if isinstance(info, msgspec.inspect.ListType):
        return [shape(info.item_type)]
    if isinstance(info, msgspec.inspect.DictType):
        return {"*": shape(info.value_type)}
    if isinstance(info, msgspec.inspect.UnionType):
        present = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]  # UNSET is not listed
        assert len(present) == 1, info
        return shape(present[0])
    return type(info).__name__


def missing(sent, read, at: str = "$") -> list[str]:
    """What the client reads (``read``) that the server does not send (``sent``) in the same shape."""
    if isinstance(read, dict) and isinstance(sent, dict):
        problems = []
        for key, value in read.items():
            problems += missing(sent[key], value, f"{at}.{key}") if key in sent else [f"{at}.{key}: not sent"]
        return problems
    if isinstance(read, list) and isinstance(sent, list):
        return missing(sent[0], read[0], f"{at}[]")
    return [] if read == sent else [f"{at}: sent as {sent}, read as {read}"]


@pytest.mark.parametrize(("sent", "read"), PAIRS, ids=[s.__name__ for s, _ in PAIRS])
def test_the_client_reads_only_what_the_server_sends(sent, read):
    assert missing(shape(msgspec.inspect.type_info(sent)), shape(msgspec.inspect.type_info(read))) == []


def test_a_server_answer_decodes_into_the_client_type():
    answer = server.ScoreAnswer([server.ScoredItem("a", 0.5, {"pop": 0.25}), server.ScoredItem("b", 0.0)], [],
                                {"redis": 0.4, "total": 1.0})  # fmt: skip
    got = msgspec.json.decode(server.encode(answer), type=client.ScoreResult)
    assert got.items == [client.ScoredItem("a", 0.5, {"pop": 0.25}), client.ScoredItem("b", 0.0, None)]
    memory = server.ContextMemory("e2", ["e1", "e2"], "my dog is Biscuit", 1_700_000_000_000, 0.03)
    rewrite = server.RewriteAnswer([{"role": "user", "content": "hi", "name": "x"}],
                                   server.RewriteContext(["line"], [], [memory], []), ["unknown_user"], {"total": 2.0})
    got = msgspec.json.decode(server.encode(rewrite), type=client.RewriteResult)
    want = client.ContextMemory("e2", "my dog is Biscuit", 1_700_000_000_000, 0.03, ["e1", "e2"])
    assert got.context.memories == [want]
    assert got.messages == rewrite.messages and got.degraded == ["unknown_user"]
