"""THE FLOOR: a minimal heartbeat sweep, the reference the product's sweeps are measured against.

Not the product and never imported by it. It does the least a heartbeat can do and still be one:
for each credential, decrypt its refresh token, one refresh grant and two API probes over plain
HTTP/1.1 keep-alive connections (asyncio streams, no HTTP library), then store the encrypted
access token and write one audit row (psycopg, autocommit). No locking, no retries, no state
machine, no metrics, no logging: what is left is the cost of the work itself, on this machine, in
this invocation, against the same fake Google.

Run as ``python -m bench.floor`` with the bench's environment (DATABASE_URL, the fake's endpoint
variables, the client id/secret and OAUTH_ENCRYPTION_KEYS); prints one JSON line.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from urllib.parse import urlencode, urlsplit

import psycopg
from cryptography.fernet import Fernet, MultiFernet

CONCURRENCY = int(os.environ.get("FLOOR_CONCURRENCY", "64"))
DB_CONNECTIONS = 8


class KeepAlivePool:
    """Plain HTTP/1.1 keep-alive connections to one host, reused across requests."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, *, headers: dict, body: bytes = b"") -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await reader.readexactly(length)
        self.idle.append(conn)
        return int(status_line.split()[1]), data


async def sweep() -> dict:
    keys = MultiFernet([Fernet(k.strip()) for k in os.environ["OAUTH_ENCRYPTION_KEYS"].split(",")])
    token = urlsplit(os.environ["GOOGLE_OAUTH_TOKEN_URI"])
    api = urlsplit(os.environ["GOOGLE_API_BASE_URL"])
    http = KeepAlivePool(token.hostname, token.port)  # the fake serves the APIs on the same host
    client_id = os.environ["GOOGLE_OAUTH_CLIENT_ID"]
    client_secret = os.environ["GOOGLE_OAUTH_CLIENT_SECRET"]
    dsn = os.environ["DATABASE_URL"]

    connections: asyncio.Queue = asyncio.Queue()
    for _ in range(DB_CONNECTIONS):
        connections.put_nowait(await psycopg.AsyncConnection.connect(dsn, autocommit=True))
    reader = await connections.get()
    rows = await (await reader.execute(
        "SELECT id, refresh_token, credential_key, email FROM google_oauth_credentials ORDER BY id"
    )).fetchall()
    connections.put_nowait(reader)

    in_flight = peak = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def heartbeat(row) -> bool:
        nonlocal in_flight, peak
        pk, ciphertext, key, email = row
        async with gate:
            refresh_token = keys.decrypt(ciphertext.encode()).decode()
            form = urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token,
                              "client_id": client_id, "client_secret": client_secret}).encode()
            in_flight += 1
            peak = max(peak, in_flight)
            status, body = await http.request(
                "POST", token.path, body=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            in_flight -= 1
            if status != 200:
                return False
            answer = json.loads(body)
            bearer = {"Authorization": f"Bearer {answer['access_token']}"}
            await http.request("GET", api.path + "/calendar/v3/users/me/calendarList?maxResults=1",
                               headers=bearer)
            await http.request("GET", api.path + "/gmail/v1/users/me/profile", headers=bearer)
            now = dt.datetime.now(dt.timezone.utc)
            conn = await connections.get()
            try:
                await conn.execute(
                    "UPDATE google_oauth_credentials SET access_token = %s, "
                    "access_token_expires_at = %s, last_refreshed_at = %s, updated_at = %s "
                    "WHERE id = %s",
                    [keys.encrypt(answer["access_token"].encode()).decode(),
                     now + dt.timedelta(seconds=int(answer.get("expires_in", 3600))), now, now, pk],
                )
                await conn.execute(
                    "INSERT INTO oauth_auditevent (action, credential_id, credential_key, account, "
                    "actor, outcome, detail, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    ["refreshed", pk, key, email, "process:floor", "refreshed", "{}", now],
                )
            finally:
                connections.put_nowait(conn)
            return True

    results = await asyncio.gather(*(heartbeat(row) for row in rows))
    while not connections.empty():
        await (await connections.get()).close()
    return {"credentials": len(rows), "ok": sum(results), "peak_in_flight": peak}


def main() -> None:
    started, cpu_at_start = time.perf_counter(), sum(os.times()[:2])  # after the imports
    result = asyncio.run(sweep())
    result["wall_s"] = time.perf_counter() - started
    result["cpu_s"] = sum(os.times()[:2])
    result["sweep_cpu_s"] = result["cpu_s"] - cpu_at_start
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
