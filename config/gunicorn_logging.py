"""gunicorn's access log without secrets: the same masking as config/redaction.py applied to
every field of an access-log line (request line, path, query, Referer, any header a custom
access_log_format names), so an appeal link's token never lands in the access log.

Use it with `logger_class = "config.gunicorn_logging.RedactingLogger"` in the gunicorn
config (scripts/gunicorn.conf.py) or `--logger-class config.gunicorn_logging.RedactingLogger`."""
from __future__ import annotations

import re
from functools import cache

from gunicorn.glogging import Logger

from config.redaction import redact


@cache
def _used_atoms(access_log_format: str) -> tuple[str, ...]:
    """The atoms a format names, as gunicorn looks them up (header atoms in lower case)."""
    names = re.findall(r"%\(([^)]+)\)", access_log_format)
    return tuple(dict.fromkeys(name.lower() if name.startswith("{") else name for name in names))


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        # Only the atoms the line will hold: gunicorn makes one for every request and
        # response header, and masking them all cost more than the rest of the line.
        for name in _used_atoms(self.cfg.access_log_format):
            value = atoms.get(name)
            if isinstance(value, str):
                atoms[name] = redact(value)
        return atoms
