from rest_framework.throttling import SimpleRateThrottle

from .permissions import is_api_client


class ClientRateThrottle(SimpleRateThrottle):
    """One budget per API client, per person, or per IP for anonymous callers; counted in
    the shared cache (Redis in production) so every worker sees the same count."""

    scope = "client"

    def get_cache_key(self, request, view):
        user = request.user
        if is_api_client(user):
            ident = f"client:{user.pk}"
        elif user is not None and user.is_authenticated:
            ident = f"user:{user.pk}"
        else:
            self.scope = "anon"
            self.rate = self.get_rate()
            self.num_requests, self.duration = self.parse_rate(self.rate)
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class _SettingRateThrottle(SimpleRateThrottle):
    """A throttle whose rate is a setting, read on every request (so it can be changed
    without a restart in tests and by env in production). An empty setting: no limit."""

    rate_setting = ""

    def get_rate(self):
        from django.conf import settings

        return getattr(settings, self.rate_setting, None) or None


class AppealTokenThrottle(_SettingRateThrottle):
    """Appeals filed through one appeal link. Keyed by the token's hash: the cache never
    holds a usable link."""

    scope = "appeal_token"
    rate_setting = "OZ_APPEAL_RATE_PER_TOKEN"

    def get_cache_key(self, request, view):
        from .appeal_tokens import appeal_token_sha256

        token = view.kwargs.get("token", "")
        return self.cache_format % {"scope": self.scope, "ident": appeal_token_sha256(token)}


class AppealIpThrottle(_SettingRateThrottle):
    """Appeals filed from one address, whatever the link (guessing links costs budget too)."""

    scope = "appeal_ip"
    rate_setting = "OZ_APPEAL_RATE_PER_IP"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
