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
