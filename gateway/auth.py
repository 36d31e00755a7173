"""DRF authentication: API clients (`Bearer <api key>`) and people (`Token <user token>`).

A presented credential that is malformed or matches nothing is counted against the caller's
address (gateway.throttling.auth_failure_record): 401 until the address is over
settings.OZ_THROTTLE_AUTH_FAILURES, then 429 with Retry-After. Success touches no cache."""
from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from .keys import hash_matches, key_hash, key_matches, key_prefix
from .models import ApiKey, UserToken
from .throttling import auth_failure_record, auth_failures_refusal
from .verified_keys import verified_generation, verified_get, verified_remember

API_KEY_KIND = "oz"
USER_TOKEN_KIND = "ozu"  # noqa: S105 - a key prefix, not a secret


def _refuse(request, message) -> exceptions.APIException:
    """The exception for a failed credential, counted against the caller's address: 401, or
    429 once that address has failed too often. The credential itself is never logged."""
    wait = auth_failure_record(request)
    if wait is not None:
        return auth_failures_refusal(wait)
    return exceptions.AuthenticationFailed(message)


def _credential(request, scheme: str) -> str | None:
    header = authentication.get_authorization_header(request).split()
    if not header or header[0].lower() != scheme.lower().encode():
        return None
    if len(header) != 2:
        raise _refuse(request, _("Malformed Authorization header."))
    try:
        return header[1].decode("ascii")
    except UnicodeError:
        raise _refuse(request, _("Malformed Authorization header.")) from None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer oz_…` — request.user becomes the ApiClient."""

    keyword = "Bearer"

    def authenticate(self, request):
        presented = _credential(request, self.keyword)
        if presented is None:
            return None
        prefix = key_prefix(API_KEY_KIND, presented)
        digest = key_hash(presented) if prefix else ""
        if prefix and (known := verified_get(digest)) is not None:
            return known
        generation = verified_generation()
        key = None
        if prefix:
            key = (
                ApiKey.objects.select_related("client")
                .filter(prefix=prefix, revoked_at__isnull=True, client__is_active=True)
                .first()
            )
        if key is None or not hash_matches(digest, key.key_hash):
            raise _refuse(request, _("Invalid API key."))
        verified_remember(digest, key.client, key, generation=generation)
        return key.client, key

    def authenticate_header(self, request):
        return challenge_for(request, default=self.keyword)


class UserTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Token ozu_…` — request.user becomes the reviewer or operator."""

    keyword = "Token"

    def authenticate(self, request):
        presented = _credential(request, self.keyword)
        if presented is None:
            return None
        prefix = key_prefix(USER_TOKEN_KIND, presented)
        token = None
        if prefix:
            token = (
                UserToken.objects.select_related("user")
                .filter(prefix=prefix, revoked_at__isnull=True, user__is_active=True)
                .first()
            )
        if token is None or not key_matches(presented, token.key_hash):
            raise _refuse(request, _("Invalid token."))
        return token.user, token

    def authenticate_header(self, request):
        return challenge_for(request, default=self.keyword)


def challenge_for(request, *, default: str) -> str:
    """The WWW-Authenticate of a 401: the schemes the view takes, from its permission
    classes (API clients send `Bearer`, people `Token`); DRF asks only the first
    authenticator, whose own scheme would be wrong on people's endpoints."""
    from .permissions import HasDjangoPerm, IsApiClient, IsApiClientOrHasPerm

    view = (getattr(request, "parser_context", None) or {}).get("view")
    kinds = set(getattr(view, "permission_classes", ()))
    schemes = []
    if kinds & {IsApiClient, IsApiClientOrHasPerm}:
        schemes.append(ApiKeyAuthentication.keyword)
    if kinds & {HasDjangoPerm, IsApiClientOrHasPerm}:
        schemes.append(UserTokenAuthentication.keyword)
    return ", ".join(schemes) or default


def touch_key(key: ApiKey) -> None:
    """Record use at most once a minute, so auth adds no write to most requests."""
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now  # the remembered row too (gateway.verified_keys)
