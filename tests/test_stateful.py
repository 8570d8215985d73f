"""A stateful property test of the named face: random sequences of create / connect /
accept / write / read / change mode / close, checked against a model of what each name
should hold and which messages are in flight.  Real TLS over loopback throughout."""
from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import sslsock
from sslsock._faces.registry import REGISTRY

WAIT_MS = 3000


@pytest.fixture(autouse=True, scope="module")
def _store(pki: Any) -> None:
    """The state machine cannot take fixtures: make the session's store current for it."""
MODES = [sslsock.SocketSizeAtBeginning, sslsock.SocketEndTagBuffer]
payloads = st.binary(min_size=1, max_size=3000).filter(lambda b: b"<EOF>" not in b)


class NamedSockets(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server = "srv"
        assert sslsock.SocketCreateSSL(self.server, 0, "localhost",
                                       sslsock.ProtocolTLS1_2 + sslsock.ProtocolTLS1_3)
        self.port = REGISTRY.get(self.server).obj.port
        # client name -> (channel name, mode, messages client->channel, channel->client)
        self.pairs: dict[str, dict[str, Any]] = {}
        self.counter = 0

    @precondition(lambda self: len(self.pairs) < 4)
    @rule()
    def connect_and_accept(self) -> None:
        self.counter += 1
        client = f"cli{self.counter}"
        assert sslsock.SocketConnectSSL(client, self.port, "localhost"), sslsock.ErrorInfo()
        assert sslsock.SocketWaitForConnection(self.server, WAIT_MS), sslsock.ErrorInfo()
        channel = sslsock.SocketAccept(self.server)
        assert channel and sslsock.SocketExist(channel)
        self.pairs[client] = {"channel": channel, "mode": sslsock.SocketSizeAtBeginning,
                              "up": deque(), "down": deque()}

    @precondition(lambda self: self.pairs)
    @rule(data=st.data(), payload=payloads, upward=st.booleans())
    def write(self, data: st.DataObject, payload: bytes, upward: bool) -> None:
        client = data.draw(st.sampled_from(sorted(self.pairs)))
        pair = self.pairs[client]
        src = client if upward else pair["channel"]
        assert sslsock.SocketWrite(src, payload), sslsock.ErrorInfo()
        pair["up" if upward else "down"].append(payload)

    @precondition(lambda self: any(p["up"] or p["down"] for p in self.pairs.values()))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        ready = sorted(c for c, p in self.pairs.items() if p["up"] or p["down"])
        client = data.draw(st.sampled_from(ready))
        pair = self.pairs[client]
        upward = bool(pair["up"]) if not pair["down"] else (
            data.draw(st.booleans()) if pair["up"] else False)
        dst = pair["channel"] if upward else client
        expected = pair["up" if upward else "down"].popleft()
        got = sslsock.SocketRead(dst, False, WAIT_MS)
        assert got == expected, (sslsock.ErrorInfo(), len(got), len(expected))
        assert not sslsock.ErrorOccurred()

    @precondition(lambda self: any(not p["up"] and not p["down"] for p in self.pairs.values()))
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def change_mode(self, data: st.DataObject, mode: int) -> None:
        idle = sorted(c for c, p in self.pairs.items() if not p["up"] and not p["down"])
        client = data.draw(st.sampled_from(idle))
        pair = self.pairs[client]
        assert sslsock.SocketChangeTransmissionMode(client, mode)
        assert sslsock.SocketChangeTransmissionMode(pair["channel"], mode)
        pair["mode"] = mode

    @precondition(lambda self: self.pairs)
    @rule(data=st.data())
    def client_leaves(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(sorted(self.pairs)))
        pair = self.pairs.pop(client)
        assert sslsock.SocketClose(client)
        assert not sslsock.SocketExist(client)
        # what the client never read is simply gone; what it sent before leaving arrives
        for expected in pair["up"]:
            assert sslsock.SocketRead(pair["channel"], False, WAIT_MS) == expected
        assert sslsock.SocketRead(pair["channel"], False, WAIT_MS) == b""
        assert sslsock.ErrorInfo(sslsock.errCode) == sslsock.ErrorCode.PEER_CLOSED
        assert sslsock.SocketExist(pair["channel"])
        assert sslsock.SocketClose(pair["channel"])

    @invariant()
    def names_match_the_model(self) -> None:
        names = set(REGISTRY.names())
        expected = {self.server} | set(self.pairs) | {p["channel"] for p in self.pairs.values()}
        assert names == expected

    def teardown(self) -> None:
        for name in REGISTRY.names():
            sslsock.SocketClose(name)


TestNamedSockets = NamedSockets.TestCase
TestNamedSockets.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
