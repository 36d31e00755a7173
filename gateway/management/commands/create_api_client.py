from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from gateway.models import Predictor
from gateway.services import api_client_create


class Command(BaseCommand):
    help = "Create an API client and print its key (shown once; only a hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--predictors", default=None, help="comma-separated slugs; left out: all predictors")
        parser.add_argument(
            "--webhook-hosts",
            default="",
            help="comma-separated hosts its callback_urls may name: exact names, IPs or '*.example.com'; "
            "a network such as '10.0.0.0/8' also allows private targets inside it; default: none (no webhooks)",
        )

    def handle(self, *args, name, predictors, webhook_hosts, **options):
        slugs = [s.strip() for s in (predictors or "").split(",") if s.strip()]
        if predictors is not None and not slugs:
            # An empty value (an unset variable in a script, say) must not widen the key to
            # every predictor: leaving the option out is how to ask for that.
            raise CommandError("--predictors names no predictor; leave the option out for a key to all predictors")
        hosts = [h.strip() for h in webhook_hosts.split(",") if h.strip()]
        try:
            client, key = api_client_create(name=name, predictor_slugs=slugs, webhook_hosts=hosts)
        except IntegrityError:
            raise CommandError(f"an API client named {name!r} already exists") from None
        except Predictor.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(f"--webhook-hosts: {exc}") from None
        scope = ", ".join(slugs) if slugs else "all predictors"
        self.stdout.write(f"API client {client.name!r} ({scope})")
        self.stdout.write(f"Webhook hosts: {', '.join(client.webhook_hosts) or 'none (webhooks disabled)'}")
        self.stdout.write(f"API key (store it now, it is not shown again): {key}")
        self.stdout.write(f"Webhook signing secret: {client.webhook_secret}")
