"""``scopes_digest``: the md5 of each credential's recorded scope list, kept by the database, so the
status and the dashboard judge thousands of accounts without taking each row's JSON apart."""
import django.db.models.fields.json
import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("oauth", "0008_credentials_hot_updates"),
    ]

    operations = [
        migrations.AddField(
            model_name="googlecredential",
            name="scopes_digest",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.db.models.functions.text.MD5(
                    django.db.models.fields.json.KeyTextTransform("scopes", "credentials")
                ),
                output_field=models.CharField(max_length=32),
            ),
        ),
    ]
