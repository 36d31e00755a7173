"""DRF authentication: API clients (`Bearer <api key>`) and people (`Token <user token>`)."""
from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from .keys import key_matches, key_prefix
from .models import ApiKey, UserToken

API_KEY_KIND = "oz"
USER_TOKEN_KIND = "ozu"  # noqa: S105 - a key prefix, not a secret


def _credential(request, scheme: str) -> str | None:
    header = authentication.get_authorization_header(request).split()
    if not header or header[0].lower() != scheme.lower().encode():
        return None
    if len(header) != 2:
        raise exceptions.AuthenticationFailed(_("Malformed Authorization header."))
    try:
        return header[1].decode("ascii")
    except UnicodeError:
        raise exceptions.AuthenticationFailed(_("Malformed Authorization header.")) from None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer oz_…` — request.user becomes the ApiClient."""

    keyword = "Bearer"

    def authenticate(self, request):
        presented = _credential(request, self.keyword)
        if presented is None:
            return None
        prefix = key_prefix(API_KEY_KIND, presented)
        key = None
        if prefix:
            key = (
                ApiKey.objects.select_related("client")
                .filter(prefix=prefix, revoked_at__isnull=True, client__is_active=True)
                .first()
            )
        if key is None or not key_matches(presented, key.key_hash):
            raise exceptions.AuthenticationFailed(_("Invalid API key."))
        return key.client, key

    def authenticate_header(self, request):
        return self.keyword


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
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword


def touch_key(key: ApiKey) -> None:
    """Record use at most once a minute, so auth adds no write to most requests."""
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
