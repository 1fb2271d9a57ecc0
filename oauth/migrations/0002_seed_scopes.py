"""Seed the scope catalogue and the features' scope needs from oauth/scopes.py."""
from django.db import migrations


def seed(apps, schema_editor):
    from oauth import scopes as catalogue

    Scope = apps.get_model("oauth", "Scope")
    Feature = apps.get_model("oauth", "Feature")
    by_uri = {}
    for uri, (short, description) in catalogue.SCOPES.items():
        by_uri[uri], _ = Scope.objects.update_or_create(
            uri=uri, defaults={"short_name": short, "description": description}
        )
    for uri, implied in catalogue.IMPLIES.items():
        by_uri[uri].implies.set([by_uri[i] for i in implied])
    for key, (connector, description, satisfied_by) in catalogue.FEATURES.items():
        feature, _ = Feature.objects.update_or_create(
            key=key, defaults={"connector": connector, "description": description}
        )
        feature.satisfied_by.set([by_uri[u] for u in satisfied_by])


class Migration(migrations.Migration):
    dependencies = [("oauth", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
