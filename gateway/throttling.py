import logging
import time
from typing import NamedTuple

from django.core.cache import cache
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from .permissions import is_api_client

logger = logging.getLogger(__name__)

_DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def client_address(request) -> str:
    """The caller's address as every throttle sees it: REMOTE_ADDR, or the right entry of
    X-Forwarded-For when REST_FRAMEWORK NUM_PROXIES says how many proxies append to it."""
    return BaseThrottle().get_ident(request) or ""


# --- failed API authentication ----------------------------------------------------------------
# A wrong or malformed `Bearer`/`Token` credential counts against the caller's address, in a
# fixed window of the shared cache (atomic INCR, so concurrent guesses are all counted). Past
# settings.OZ_THROTTLE_AUTH_FAILURES (e.g. "20/min") the address is refused with 429 and
# Retry-After until its window ends — and so is every request from it that presents
# credentials, valid ones included (ClientRateThrottle reads the count in the same cache
# round trip as its own budget, so a successful request costs no extra cache call).

def _auth_failure_rate() -> tuple[int, int] | None:
    from django.conf import settings

    rate = getattr(settings, "OZ_THROTTLE_AUTH_FAILURES", "") or ""
    if not rate:
        return None
    count, period = rate.split("/")
    return int(count), _DURATIONS[period[0]]


class _FailureWindow(NamedTuple):
    limit: int
    window: int
    key: str  # the cache key of the address's count in the current window
    left: float  # seconds left in the window


def _failure_window(request) -> _FailureWindow | None:
    """The failed-authentication window this request's address is in; None without a limit."""
    rate = _auth_failure_rate()
    if rate is None:
        return None
    limit, window = rate
    return _FailureWindow(limit, window, *_auth_failure_key(client_address(request), window, time.time()))


def _auth_failure_key(address: str, window: int, now: float) -> tuple[str, float]:
    """The cache key of this address's current window, and the seconds left in it."""
    index = int(now // window)
    return f"throttle_auth_failures_{address}_{index}", (index + 1) * window - now


def auth_failure_record(request) -> float | None:
    """Count one failed authentication from this request's address. Returns the seconds to
    wait when the address is now over its limit (refuse with 429), else None (plain 401).
    A cache outage never turns a 401 into a 500: the failure is then not counted."""
    failures = _failure_window(request)
    if failures is None:
        return None
    try:
        try:
            count = cache.incr(failures.key)
        except ValueError:  # the window's first failure
            count = 1 if cache.add(failures.key, 1, timeout=failures.window + 1) else cache.incr(failures.key)
    except Exception:
        logger.warning("could not count a failed authentication (cache unreachable)", exc_info=True)
        return None
    return failures.left if count > failures.limit else None


def auth_failures_wait(request) -> float | None:
    """The seconds left in the block when this request's address is over the failed
    authentication limit, else None. For the credentials no DRF throttle sees (the metrics
    token); ClientRateThrottle reads the same count for API keys and user tokens. A cache
    outage blocks nobody."""
    failures = _failure_window(request)
    if failures is None:
        return None
    try:
        count = cache.get(failures.key) or 0
    except Exception:
        logger.warning("could not read the failed-authentication count (cache unreachable)", exc_info=True)
        return None
    return failures.left if count >= failures.limit else None


def auth_failures_refusal(wait: float) -> exceptions.Throttled:
    """The 429 for an address over the failed-authentication limit, whatever it presented."""
    return exceptions.Throttled(wait=wait, detail=str(_("Too many failed authentication attempts from this address; try again later.")))


# --- the cache is down ---------------------------------------------------------------------------
# A throttle protects the service; it must not become the outage. When the shared cache
# (Redis) cannot be reached, the budget throttles let the request through (fail open), log
# that at most once per CACHE_RETRY_SECONDS per process, and leave the cache alone for that
# long, so each request does not pay another failed connection meanwhile.
CACHE_RETRY_SECONDS = 5.0
_cache_down_until = 0.0


def _cache_errors() -> tuple[type, ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return (OSError,)
    return (RedisError, OSError)


CACHE_ERRORS = _cache_errors()


def _cache_fail_open(cls):
    """Wrap `cls.allow_request` so that a cache failure lets the request through."""
    counted = cls.allow_request

    def allow_request(self, request, view):
        global _cache_down_until
        if time.monotonic() < _cache_down_until:
            return True
        try:
            return counted(self, request, view)
        except CACHE_ERRORS as exc:
            _cache_down_until = time.monotonic() + CACHE_RETRY_SECONDS
            logger.warning(
                "throttle %s: the cache is unreachable (%s: %s); letting requests through unthrottled for %ss",
                cls.__name__, type(exc).__name__, exc, CACHE_RETRY_SECONDS,
            )
            return True

    allow_request.__doc__ = counted.__doc__
    cls.allow_request = allow_request
    return cls


def _redis_client():
    """The shared cache's redis-py client, or None when the cache is not Oz's Redis cache
    (config.cache.SharedClientRedisCache; the local-memory cache in local runs)."""
    client_of = getattr(cache, "redis_client", None)
    return client_of() if client_of is not None else None


# One budget request on Redis: count it, start the window's expiry with its first request,
# read the seconds left only when the budget is spent (for Retry-After), and read the other
# key. One command, and atomic: no window can be left without an expiry by a process dying
# between two commands (one left by anything else gets its expiry back when it is over).
_BUDGET_LUA = """
local count = redis.call('INCR', KEYS[1])
local left = -1
if count == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
elseif count > tonumber(ARGV[2]) then
  left = redis.call('TTL', KEYS[1])
  if left < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    left = tonumber(ARGV[1])
  end
end
local other = false
if ARGV[3] == '1' then other = redis.call('GET', KEYS[2]) end
return {count, left, other}
"""
_budget_scripts: dict[int, object] = {}


def budget_count(key: str, window: int, limit: int, *, also_get: str | None = None) -> tuple[int, float, object]:
    """Count one request in the budget `key` (a window of `window` seconds that starts with
    its first request) and return (requests in the window, seconds left in it, the value of
    the cache key `also_get` or None). The seconds left are exact once the count is over
    `limit`; below it they are not read (the window is given). On Redis this is one
    command (a Lua script); elsewhere (the local-memory cache) plain cache calls."""
    redis = _redis_client()
    if redis is None:
        cache.add(key, 0, timeout=window)
        count = cache.incr(key)
        return count, float(window), cache.get(also_get) if also_get else None
    script = _budget_scripts.get(id(redis))
    if script is None:
        script = _budget_scripts[id(redis)] = redis.register_script(_BUDGET_LUA)
    full_key = cache.make_and_validate_key(key)
    other_key = cache.make_and_validate_key(also_get) if also_get else full_key
    count, left, raw = script(keys=[full_key, other_key], args=[window, limit, "1" if also_get else "0"])
    other = cache.value_from_redis(raw) if raw is not None else None
    return int(count), float(left if left >= 0 else window), other


@_cache_fail_open
class ClientRateThrottle(SimpleRateThrottle):
    """One budget per API client, per person, or per IP for anonymous callers; counted in
    the shared cache (Redis in production) so every worker sees the same count.

    The budget is a counter whose window starts with the first request and lasts the rate's
    period (like GitHub's and Stripe's limits): one atomic INCR per request, whatever the
    rate, instead of DRF's list of every request's time (read, trimmed and written back in
    two calls, racing between workers, and growing with the rate).

    A request authenticated by an API key or user token is also refused (429) while its
    address is over the failed-authentication limit (auth_failure_record): both counts are
    read in the same round trip."""

    scope = "client"
    blocked_wait: float | None = None

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        failures = _failure_window(request) if getattr(request, "auth", None) is not None else None
        count, left, failed = budget_count(self.key, self.duration, self.num_requests,
                                           also_get=failures.key if failures is not None else None)
        if failures is not None and (failed or 0) >= failures.limit:
            self.blocked_wait = failures.left
            return False
        if count > self.num_requests:
            self.blocked_wait = left
            return False
        return True

    def wait(self):
        return self.blocked_wait

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


@_cache_fail_open
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
