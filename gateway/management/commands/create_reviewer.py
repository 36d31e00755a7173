from gateway.management.people import PersonCommand
from gateway.roles import REVIEWERS


class Command(PersonCommand):
    help = "Create a reviewer (staff user in group `reviewers`) and print an API token."
    group = REVIEWERS
