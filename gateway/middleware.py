from django.conf import settings

from .errors import _problem_json


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
