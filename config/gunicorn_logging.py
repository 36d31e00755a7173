"""gunicorn's access log without secrets: the same masking as config/redaction.py applied to
every field of an access-log line (request line, path, query, Referer, any header a custom
access_log_format names), so an appeal link's token never lands in the access log.

Use it with `logger_class = "config.gunicorn_logging.RedactingLogger"` in the gunicorn
config (scripts/gunicorn.conf.py) or `--logger-class config.gunicorn_logging.RedactingLogger`."""
from __future__ import annotations

from gunicorn.glogging import Logger

from config.redaction import redact


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {name: redact(value) if isinstance(value, str) else value for name, value in atoms.items()}
