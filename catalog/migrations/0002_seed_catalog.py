from django.db import migrations


def seed(apps, schema_editor):
    from catalog.seed import DATA_FILE, load_catalog

    if DATA_FILE.exists():
        load_catalog(apps.get_model("catalog", "GpuType"), apps.get_model("catalog", "GpuOffer"))


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
