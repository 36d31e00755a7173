from django.conf import settings

from .errors import _problem_json, dependency_log, dependency_unavailable, unavailable_response


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit before anything reads them (413, problem+json)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.limit = settings.OZ_MAX_BODY_BYTES

    def __call__(self, request):
        raw = request.META.get("CONTENT_LENGTH")
        if raw:
            try:
                length = int(raw)
            except ValueError:
                return _problem_json(400, "Content-Length is not a number.")
            if length > self.limit:
                return _problem_json(413, f"The request body is larger than {self.limit} bytes.")
        return self.get_response(request)


class DependencyUnavailableMiddleware:
    """A view that fails because a dependency is down (the database refusing or dropping
    connections, Redis unreachable: gateway.errors.dependency_unavailable) answers 503 with
    Retry-After, logged as one warning line: an HTML page in the admin and for browsers,
    problem+json elsewhere, never a stack trace, whatever DEBUG says. DRF views get the same
    from their exception handler; errors raised outside any view from handler500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not dependency_unavailable(exception):
            return None
        dependency_log(request, exception)
        return unavailable_response(request)
