from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from gateway.services import person_create


class PersonCommand(BaseCommand):
    group = ""

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--password", default=None,
            help="for the admin login, checked by AUTH_PASSWORD_VALIDATORS as the admin checks it; without it a new "
            "user has API access only, and an existing user keeps the password they have",
        )

    def handle(self, *args, username, password, **options):
        if password is not None:
            # As `createsuperuser` and the admin's password form do: an operator can flip
            # routing and promote models, so "short" is no password for one.
            User = get_user_model()
            user = User.objects.filter(username=username).first() or User(username=username)
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError("--password: " + " ".join(exc.messages)) from None
        user, token = person_create(username=username, group=self.group, password=password)
        if password:
            login = "yes"
        elif user.has_usable_password():
            login = "yes, with the password set before"
        else:
            login = "no password set"
        self.stdout.write(f"{self.group[:-1]} {user.username!r} ready (admin login: {login})")
        self.stdout.write(f"API token (store it now, it is not shown again): {token}")
