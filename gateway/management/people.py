from django.core.management.base import BaseCommand

from gateway.services import person_create


class PersonCommand(BaseCommand):
    group = ""

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", default=None, help="for the admin login; without it the user has API access only")

    def handle(self, *args, username, password, **options):
        user, token = person_create(username=username, group=self.group, password=password)
        self.stdout.write(f"{self.group[:-1]} {user.username!r} ready (admin login: {'yes' if password else 'no password set'})")
        self.stdout.write(f"API token (store it now, it is not shown again): {token}")
