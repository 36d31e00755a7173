from django.core.management.base import BaseCommand, CommandError

from gateway.definitions import DefinitionError, predictors_load


class Command(BaseCommand):
    help = "Load predictor definitions from a YAML file or a folder of them (all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("path")

    def handle(self, *args, path, **options):
        try:
            results = predictors_load(path)
        except DefinitionError as exc:
            raise CommandError(f"nothing loaded; {exc}") from None
        for r in results:
            self.stdout.write(f"{r.action:9} {r.slug} (schema v{r.schema_version}) from {r.path}")
