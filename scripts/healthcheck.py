"""Container health check: GET a URL (default http://127.0.0.1:8000/healthz), exit 0 on 2xx.

Sends a Host header Django will accept (the first concrete DJANGO_ALLOWED_HOSTS entry), so
the check passes whatever public hostname production is configured with, and
X-Forwarded-Proto: https so the HTTPS redirect never answers instead of the view.
Standard library only: the slim image has no curl.
"""

import http.client
import os
import sys
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL
    headers = {"X-Forwarded-Proto": "https"}
    allowed = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")]
    host = next((h.lstrip(".") for h in allowed if h and h != "*"), None)
    if host:
        headers["Host"] = host
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    # HTTPError (non-2xx), refused, timeout, reset, garbage: unhealthy; say why in `docker inspect`.
    except (OSError, http.client.HTTPException, ValueError) as exc:
        print(f"healthcheck {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
