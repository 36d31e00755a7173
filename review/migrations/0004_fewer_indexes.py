import django.db.models.deletion
from django.db import migrations, models

from gateway.index_migrations import IndexSpec, index_swap

# A decision's index on task_id alone duplicates the unique (task, reviewer) constraint,
# which leads with it. Dropped without blocking writes (gateway/index_migrations.py).
_INDEXES = index_swap(
    build=[],
    drop=[IndexSpec("review_decision_task_id_7cd6da32", "review_decision", ("task_id",))],
)


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("review", "0003_historicalreviewtask_suggestion_and_more"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="decision",
                    name="task",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="decisions", to="review.reviewtask"),
                ),
            ],
            database_operations=[_INDEXES],
        ),
    ]
