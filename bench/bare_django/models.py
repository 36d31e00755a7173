from django.db import models


class BareDjangoPrediction(models.Model):
    """One stored answer, in the table bench/predict_http.py creates before the workers start."""

    id = models.UUIDField(primary_key=True)
    input = models.JSONField()
    scores = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        managed = False
        db_table = "bench_django_prediction"

    def __str__(self) -> str:
        return str(self.id)
