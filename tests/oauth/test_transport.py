"""The lean HTTP/1.1 client behind ``oauth.google.transport.send``, against real sockets.

Each test runs a tiny server on a free loopback port that answers the way a real server may
(chunked, delimited by closing the connection, a kept-alive connection closed while idle, garbage)
and checks what a caller of ``send`` gets.
"""
from __future__ import annotations

import socket
import threading

import pytest
import requests

from oauth.google import transport


class Server:
    """Accepts connections; ``answers`` is a list of raw byte answers, one per request, in order;
    ``close_after`` closes each connection after that many answers."""

    def __init__(self, answers: list[bytes], close_after: int | None = None) -> None:
        self.answers, self.close_after = list(answers), close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released each time the server closes a connection
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self._answer(conn)
        finally:
            self.closed.release()

    def _answer(self, conn: socket.socket) -> None:
        served = 0
        with conn, conn.makefile("rb") as reader:
            while self.answers:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    byte = reader.read(1)
                    if not byte:
                        return
                    head += byte
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + reader.read(length))
                answer = self.answers.pop(0)
                if answer is None:  # never answer
                    reader.read()
                    return
                conn.sendall(answer)
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    return

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture(autouse=True)
def fresh_pool():
    transport.session_reset()
    yield
    transport.session_reset()


def test_a_chunked_answer_is_read_whole_and_the_connection_kept():
    body = b'{"access_token": "ya29.x", "expires_in": 3599}'
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{10:x};ext=1\r\n".encode() + body[:10] + b"\r\n"
        + f"{len(body) - 10:x}\r\n".encode() + body[10:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    server = Server([chunked, b"HTTP/1.1 204 No Content\r\n\r\n"])
    first = transport.send("POST", server.url + "/token", data={"grant_type": "refresh_token"})
    second = transport.send("GET", server.url + "/again")
    assert first.status_code == 200 and first.json()["access_token"] == "ya29.x"
    assert first.headers["content-type"] == "application/json"
    assert second.status_code == 204 and second.content == b""
    assert server.connections == 1  # the chunked answer left the connection reusable
    assert server.requests[0].endswith(b"Content-Length: 24\r\n\r\ngrant_type=refresh_token")
    server.stop()


def test_an_answer_delimited_by_closing_the_connection_is_read_to_the_end():
    server = Server([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ok\": true}"],
                    close_after=1)
    answer = transport.send("GET", server.url + "/profile")
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    server.stop()


def test_an_idle_connection_the_server_closed_is_replaced_for_the_next_call():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    server = Server([ok, ok], close_after=1)
    assert transport.send("GET", server.url + "/a").status_code == 200
    assert server.closed.acquire(timeout=5)  # the server has closed the kept-alive connection
    assert transport.send("POST", server.url + "/token", data={"a": "b"}).status_code == 200
    assert server.connections == 2  # the refresh went out once, on a new connection
    server.stop()


@pytest.mark.parametrize("answer,problem", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "middle of the answer"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "too long"),
])
def test_an_answer_that_is_not_http_is_a_connection_error_naming_the_host(answer, problem):
    server = Server([answer], close_after=1)
    with pytest.raises(requests.ConnectionError) as caught:
        transport.send("POST", server.url + "/token", data={"a": "b"})
    assert "127.0.0.1" in str(caught.value) and problem in str(caught.value)
    server.stop()


def test_a_server_that_never_answers_is_a_timeout():
    server = Server([None])  # accepts, reads the request, never answers
    with pytest.raises(requests.Timeout):
        transport.send("GET", server.url + "/slow", deadline=0.5)
    server.stop()
