import os

from django.core.management import call_command
from django.core.management.base import BaseCommand

from config.local_beat import local_beat_start


class Command(BaseCommand):
    help = ("The development server (runserver) with the periodic tasks Celery beat would run — webhook retries, "
            "the human SLA, expired leases, drift checks — in a thread of its own (make run; config/local_beat.py).")

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", help="as for runserver, e.g. 127.0.0.1:8000")
        parser.add_argument("--noreload", action="store_true", help="do not restart on code changes")

    def handle(self, *args, addrport=None, noreload=False, **options):
        # With the autoreloader the command runs twice: in a watching parent and in the child
        # that serves (RUN_MAIN); only the serving process runs the schedule.
        if noreload or os.environ.get("RUN_MAIN") == "true":
            local_beat_start()
        call_command("runserver", *([addrport] if addrport else []), use_reloader=not noreload)
