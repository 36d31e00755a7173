from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from gateway.models import ApiClient, ApiKey
from gateway.roles import OPERATORS, REVIEWERS
from gateway.services import api_client_create, api_key_issue, person_create

DEMO_PEOPLE = [
    ("reviewer", "oz-demo-reviewer", REVIEWERS),
    ("operator", "oz-demo-operator", OPERATORS),
]
DEMO_CLIENT = "demo-client"


class Command(BaseCommand):
    help = "Create the demo reviewer, operator and API client (local use only) and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1:8000")
        parser.add_argument("--force", action="store_true", help="allow outside local settings (demo passwords are public!)")

    def handle(self, *args, host, force, **options):
        if not getattr(settings, "OZ_DEMO_ALLOWED", False) and not force:
            raise CommandError("bootstrap_demo creates users with published passwords; it only runs under config.settings.local")
        tokens = {}
        with transaction.atomic():
            for username, password, group in DEMO_PEOPLE:
                _, tokens[username] = person_create(username=username, group=group, password=password)
            client = ApiClient.objects.filter(name=DEMO_CLIENT).first()
            if client is None:
                client, key = api_client_create(name=DEMO_CLIENT)
            else:
                # Keys are stored hashed, so a fresh one is issued each time and older ones revoked.
                ApiKey.objects.filter(client=client, revoked_at__isnull=True).update(revoked_at=timezone.now())
                key = api_key_issue(client=client)
        base = f"http://{host}"
        w = self.stdout.write
        w("")
        w("=" * 72)
        w("Oz is ready.")
        w(f"  Admin (review queue, routing, models): {base}/admin/")
        for username, password, group in DEMO_PEOPLE:
            w(f"    {group[:-1]:9} login: {username} / {password}    API token: {tokens[username]}")
        w(f"  API docs: {base}/api/docs    OpenAPI: {base}/api/schema")
        w(f"  Demo API key ({DEMO_CLIENT}): {key}")
        w("  Try it:")
        w(f"    curl -s -X POST {base}/predict/loan-approval \\")
        w(f"      -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\")
        w("      -d '{\"input\": {\"amount\": 12000, \"years_trading\": 4, \"sector\": \"food\"}}'")
        w("  Feed it synthetic traffic and a simulated reviewer:")
        w("    .venv/bin/python manage.py demo_traffic loan-approval --n 300 --simulate-reviewer")
        w("=" * 72)
        w("")
