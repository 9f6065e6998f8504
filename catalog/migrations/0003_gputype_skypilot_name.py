from django.db import migrations, models


def seed(apps, schema_editor):
    from catalog.seed import DATA_FILE, load_catalog

    if DATA_FILE.exists():
        load_catalog(apps.get_model("catalog", "GpuType"), apps.get_model("catalog", "GpuOffer"))


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_seed_catalog")]
    operations = [
        migrations.AddField(
            model_name="gputype",
            name="skypilot_name",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
