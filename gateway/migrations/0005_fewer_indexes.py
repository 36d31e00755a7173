import django.db.models.deletion
from django.db import migrations, models

from gateway.index_migrations import IndexSpec, index_swap

# Redundant indexes cost every /predict INSERT: the appeal-token index is rebuilt without its
# LIKE twin (which db_index added, and copied to the history table, never searched by
# token), and the index on predictor_id alone goes: (predictor_id, status) serves those
# lookups. Built and dropped without blocking writes (gateway/index_migrations.py).
_INDEXES = index_swap(
    build=[IndexSpec("prediction_appeal_token_idx", "gateway_prediction", ("appeal_token_sha256",))],
    drop=[
        IndexSpec("gateway_prediction_appeal_token_sha256_402c5986", "gateway_prediction", ("appeal_token_sha256",)),
        IndexSpec("gateway_prediction_appeal_token_sha256_402c5986_like", "gateway_prediction", ("appeal_token_sha256",),
                  opclass="varchar_pattern_ops"),
        IndexSpec("gateway_prediction_predictor_id_bacf9472", "gateway_prediction", ("predictor_id",)),
        IndexSpec("gateway_historicalprediction_appeal_token_sha256_ddcbeaeb", "gateway_historicalprediction",
                  ("appeal_token_sha256",)),
        IndexSpec("gateway_historicalprediction_appeal_token_sha256_ddcbeaeb_like", "gateway_historicalprediction",
                  ("appeal_token_sha256",), opclass="varchar_pattern_ops"),
    ],
)


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("gateway", "0004_observability"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="prediction",
                    index=models.Index(fields=["appeal_token_sha256"], name="prediction_appeal_token_idx"),
                ),
                migrations.AlterField(
                    model_name="historicalprediction",
                    name="appeal_token_sha256",
                    field=models.CharField(blank=True, max_length=64),
                ),
                migrations.AlterField(
                    model_name="prediction",
                    name="appeal_token_sha256",
                    field=models.CharField(blank=True, max_length=64),
                ),
                migrations.AlterField(
                    model_name="prediction",
                    name="predictor",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                            related_name="predictions", to="gateway.predictor"),
                ),
            ],
            database_operations=[_INDEXES],
        ),
    ]
