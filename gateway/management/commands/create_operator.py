from gateway.management.people import PersonCommand
from gateway.roles import OPERATORS


class Command(PersonCommand):
    help = "Create an operator (staff user in group `operators`) and print an API token."
    group = OPERATORS
