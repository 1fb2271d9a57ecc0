"""Refreshes update ``google_oauth_credentials`` in place (HOT): no index on last_refreshed_at,
and each page keeps room for a row's next version (fillfactor 70)."""
from django.db import migrations

FILLFACTOR = 70


def _fillfactor(value):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return  # SQLite has no fillfactor
        table = schema_editor.quote_name("google_oauth_credentials")
        if value is None:
            schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")
        else:
            schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(value)})")

    return apply


class Migration(migrations.Migration):

    dependencies = [
        ("oauth", "0007_security_events_notifications"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="googlecredential",
            name="google_oaut_last_re_a31a1f_idx",
        ),
        migrations.RunPython(_fillfactor(FILLFACTOR), _fillfactor(None), elidable=False),
    ]
