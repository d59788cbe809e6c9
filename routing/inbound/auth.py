"""Who is calling (DESIGN §9): a key (`Authorization: Bearer <key>` or `api-key: <key>`) or an
Entra access token (`Authorization: Bearer <token>`), mapped to exactly one consumer.

Keys are looked up by their SHA-256 digest: the lookup's timing depends on the digest, which
says nothing about the key presented. Presented keys and tokens are never logged or echoed.
With GATEWAY_AUTH=none every request is the consumer `default`.
"""

from __future__ import annotations

from routing.config.consumers import Consumer, ConsumerTable, key_digest
from routing.errors import GatewayError

# An Entra access token is a JWT: three base64url parts, the header starting `{"` → `eyJ`.
_JWT_START = "eyJ"


class InboundAuth:
    def __init__(self, consumers: ConsumerTable):
        self.consumers = consumers
        self.keys = "keys" in consumers.modes
        self.entra = None
        if "entra" in consumers.modes and consumers.entra is not None:
            from routing.inbound.entra import EntraValidator  # only Entra deployments import it

            settings = consumers.entra
            self.entra = EntraValidator(settings.tenant, settings.audiences, authority=settings.authority)

    async def authenticate(self, headers) -> Consumer:
        if not self.consumers.modes:
            return self.consumers.anonymous
        presented, bearer = _presented_credential(headers)
        if presented is None:
            raise GatewayError(401, _missing_message(self.keys, self.entra is not None),
                               code="missing_api_key")
        if self.entra is not None and bearer and presented.startswith(_JWT_START) and presented.count(".") == 2:
            return await self._entra_consumer(presented)
        if self.keys:
            consumer = self.consumers.by_key_digest.get(key_digest(presented))
            if consumer is not None:
                return consumer
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        raise GatewayError(401, "Send an Entra ID access token as 'Authorization: Bearer <token>'.",
                           code="invalid_token")

    async def _entra_consumer(self, token: str) -> Consumer:
        from routing.inbound.entra import InvalidToken, KeysUnavailable

        try:
            principal = await self.entra.validate(token)
        except KeysUnavailable:
            # The token may well be valid: the tenant's keys could not be read. A 503 (retried
            # by the SDKs), not a 401 (which would not be).
            raise GatewayError(503, "The gateway cannot verify access tokens right now (the "
                               "tenant's signing keys are unavailable); retry shortly.",
                               code="token_validation_unavailable", headers={"retry-after": "5"}) from None
        except InvalidToken as error:
            raise GatewayError(401, f"Invalid access token: {error.reason}.", code="invalid_token") from None
        for principal_id in principal.ids:
            consumer = self.consumers.by_principal.get(principal_id.lower())
            if consumer is not None:
                return consumer
        raise GatewayError(401, "The token is valid but its principal is not a consumer of this "
                           "gateway; ask the platform team to add its object id or client id to a "
                           "consumer's PRINCIPALS.", code="unknown_principal")


def _missing_message(keys: bool, entra: bool) -> str:
    if keys and entra:
        return ("Missing credentials. Send an API key as 'Authorization: Bearer <key>' or "
                "'api-key: <key>', or an Entra ID access token as 'Authorization: Bearer <token>'.")
    if entra:
        return "Missing access token. Send an Entra ID access token as 'Authorization: Bearer <token>'."
    return "Missing API key. Send it as 'Authorization: Bearer <key>' or 'api-key: <key>'."


def _presented_credential(headers) -> tuple[str | None, bool]:
    """(the key or token, whether it came as a Bearer credential)."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), True
    api_key = headers.get("api-key")
    return (api_key.strip(), False) if api_key and api_key.strip() else (None, False)
