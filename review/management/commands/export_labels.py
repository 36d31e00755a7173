from django.core.management.base import BaseCommand, CommandError

from gateway.models import Predictor
from review.export import FORMATS, label_export_pieces


class Command(BaseCommand):
    help = (
        "Write a predictor's current labels as CSV or JSON Lines (to stdout, or --output FILE), "
        "streamed in constant memory whatever their number."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
        parser.add_argument("--output", "-o", default="", help="file to write; default: standard output")
        parser.add_argument(
            "--include-superseded", action="store_true",
            help="also superseded labels, with a superseded_by column",
        )
        parser.add_argument(
            "--spreadsheet-safe", action="store_true",
            help="csv only: prefix text cells starting with = + - @, a tab or a carriage return with ' "
            "so spreadsheets do not run them as formulas (changes the data; off by default)",
        )

    def handle(self, *args, slug, fmt, output, include_superseded, spreadsheet_safe, **options):
        if spreadsheet_safe and fmt != "csv":
            raise CommandError("--spreadsheet-safe applies to --format csv only")
        predictor = Predictor.objects.filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no such predictor: {slug}")
        pieces = label_export_pieces(
            predictor=predictor, fmt=fmt, include_superseded=include_superseded, spreadsheet_safe=spreadsheet_safe
        )
        if output:
            # newline="": the CSV lines already end in CRLF; no translation on any platform.
            try:
                with open(output, "w", encoding="utf-8", newline="") as target:
                    for piece in pieces:
                        target.write(piece)
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc}") from None
            if options.get("verbosity", 1) > 0:
                self.stderr.write(f"Wrote {output}")
            return
        for piece in pieces:
            self.stdout.write(piece, ending="")
