from django.core.management.base import BaseCommand

from catalog.seed import DATA_FILE, load_catalog


class Command(BaseCommand):
    help = "Reload the GPU catalog (types and price offers) from catalog/data/gpus.json."

    def add_arguments(self, parser):
        parser.add_argument("--file", default=str(DATA_FILE))

    def handle(self, *args, file, **options):
        from pathlib import Path

        count = load_catalog(path=Path(file))
        self.stdout.write(self.style.SUCCESS(f"catalog: {count} GPU types loaded from {file}"))
