"""The connectors' one HTTP path to Google's APIs (Gmail, Calendar) at GOOGLE_API_BASE_URL.

Every call carries an access token from the token service (:func:`oauth.tokens.access_token_get`)
and a timeout (OAUTH_HTTP_TIMEOUT). A 401 gets one forced refresh and one retry; 429 and 5xx answers
are retried up to CONNECTOR_MAX_RETRIES times, waiting what Retry-After asks (capped at
CONNECTOR_MAX_RETRY_AFTER), else a short exponential backoff. The token service logs refreshes
itself; this module logs only the API outcome.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, ClassVar
from urllib.parse import quote

import requests

from oauth.exceptions import CredentialError, ReconsentRequired, TokenError
from oauth.google import transport

from .app_settings import connector_settings

from .exceptions import (
    ConnectorCredentialError,
    ConnectorRequestError,
    ConnectorTokenRefreshError,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: Indirection so tests can observe the waits without sleeping.
sleep = time.sleep


def path_segment(value: str) -> str:
    """Quote one path segment (calendar ids hold '@' and '#')."""
    return quote(value, safe="")


class GoogleApiClient:
    """Base of the Calendar and Gmail clients: token handling, retries, error mapping."""

    #: "Calendar" -> log "Calendar API request succeeded (200 OK)"
    log_name: ClassVar[str] = "Google"
    #: "Google Calendar" -> "Google Calendar API request failed (403): ..."
    error_name: ClassVar[str] = "Google"
    credential_error: ClassVar[type[ConnectorCredentialError]] = ConnectorCredentialError
    token_refresh_error: ClassVar[type[ConnectorTokenRefreshError]] = ConnectorTokenRefreshError
    request_error: ClassVar[type[ConnectorRequestError]] = ConnectorRequestError
    logger: ClassVar[logging.Logger] = logging.getLogger("connectors")
    success_level: ClassVar[int] = logging.INFO

    def __init__(
        self, *, account: str | None = None, actor: str = "process:connector",
        token_source: Callable[..., str] | None = None,
    ) -> None:
        self.account = account
        self.actor = actor
        #: ``(force_refresh=False) -> str``: where tokens come from instead of the token service
        #: (the broker mode, connectors/broker_mode.py); it raises the token service's errors.
        self.token_source = token_source
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(account={self.account!r})"

    # --- tokens ------------------------------------------------------------------------------
    def _access_token(self, *, force_refresh: bool = False) -> str:
        from oauth.tokens import access_token_get

        try:
            if self.token_source is not None:
                value = self.token_source(force_refresh=force_refresh)
            else:
                value = access_token_get(
                    account=self.account, force_refresh=force_refresh, actor=self.actor
                ).value
        except CredentialError as exc:
            raise self.credential_error(str(exc)) from None
        except ReconsentRequired as exc:
            raise self.token_refresh_error(
                f"Failed to refresh access token: {exc}", error=exc.error, reconsent_required=True
            ) from None
        except TokenError as exc:
            raise self.token_refresh_error(
                f"Failed to refresh access token: {exc}", error=exc.error
            ) from None
        self._token = value
        return value

    # --- requests ----------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: dict | None = None,
    ) -> dict | None:
        """Call ``GOOGLE_API_BASE_URL + path``; returns the JSON body (None for 204)."""
        url = connector_settings.GOOGLE_API_BASE_URL + path
        token = self._token or self._access_token()
        refreshed = False
        attempt = 0
        max_retries = int(connector_settings.CONNECTOR_MAX_RETRIES)
        while True:
            try:
                response = transport.send(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except requests.RequestException as exc:
                if attempt < max_retries:
                    attempt += 1
                    sleep(self._backoff(attempt, None))
                    continue
                message = (
                    f"{self.error_name} API request failed (no answer): {type(exc).__name__} "
                    f"calling {method} {transport.endpoint_host(url)}{path}"
                )
                self.logger.error("%s", message)
                raise self.request_error(message, status_code=None) from None

            status = response.status_code
            if status == 401 and not refreshed:
                # The token may have been revoked or expired early: one forced refresh, one retry.
                refreshed = True
                token = self._access_token(force_refresh=True)
                continue
            if status in RETRY_STATUSES and attempt < max_retries:
                attempt += 1
                wait = self._backoff(attempt, transport.retry_after(response))
                self.logger.warning(
                    "%s API answered %s for %s %s; retrying in %.1f s (%d/%d)",
                    self.log_name, status, method, path, wait, attempt, max_retries,
                )
                sleep(wait)
                continue
            if status >= 400:
                message = (
                    f"{self.error_name} API request failed ({status}): "
                    f"{transport.parse_error(response).description}"
                )
                self.logger.error("%s [%s %s]", message, method, path)
                raise self.request_error(message, status_code=status)

            self.logger.log(
                self.success_level,
                "%s API request succeeded (%d %s)",
                self.log_name, status, response.reason or "OK",
            )
            if status == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                message = f"{self.error_name} API request failed ({status}): the answer was not JSON"
                raise self.request_error(message, status_code=status) from None

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        return transport.backoff(
            attempt, base=0.5, cap=float(connector_settings.CONNECTOR_MAX_RETRY_AFTER),
            asked=retry_after,
        )
