"""The real server refuses a WebSocket handshake from a foreign Host (DNS rebinding).

A page on another site whose name is rebound to 127.0.0.1 reaches the server with its
own name in the Host header and a matching Origin; `.streamlit/config.toml`'s
``server.allowedHosts`` accepts only this machine's names.
"""

from __future__ import annotations

import base64
import os
import socket

import pytest

from tests.browser import streamlit_server


def handshake(port: int, host: str) -> str:
    """The status line of a WebSocket upgrade to /_stcore/stream sent with ``host``."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Origin: http://{host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: streamlit\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode())
        return connection.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


@pytest.mark.slow
def test_a_foreign_host_header_is_refused_and_localhost_accepted(tmp_path):
    with streamlit_server(tmp_path / "checkpoints", tmp_path / "server.log") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        assert " 101 " in handshake(port, "127.0.0.1") + " "
        assert " 101 " in handshake(port, "localhost") + " "
        refused = handshake(port, "evil.example")
        assert " 101 " not in refused + " ", refused
