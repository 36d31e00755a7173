from django.contrib import admin
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gateway import api as gateway_api
from gateway import metrics as gateway_metrics
from gateway import webhooks_api
from models_registry import api as registry_api
from review import api as review_api
from review import appeal_views, export_api

urlpatterns = [
    path("predict/<slug:slug>", gateway_api.PredictView.as_view(), name="predict"),
    path("predictions/<str:prediction_id>", gateway_api.PredictionDetailView.as_view(), name="prediction-detail"),
    path("predictions/<str:prediction_id>/outcome", gateway_api.PredictionOutcomeView.as_view(), name="prediction-outcome"),
    path("predictors", gateway_api.PredictorListView.as_view(), name="predictor-list"),
    path("predictors/<slug:slug>", gateway_api.PredictorDetailView.as_view(), name="predictor-detail"),
    path("predictors/<slug:slug>/routing", gateway_api.RoutingView.as_view(), name="predictor-routing"),
    path("predictors/<slug:slug>/train", registry_api.TrainView.as_view(), name="predictor-train"),
    path("predictors/<slug:slug>/models", registry_api.ModelListView.as_view(), name="predictor-models"),
    path(
        "predictors/<slug:slug>/models/<int:version>/promote",
        registry_api.PromoteView.as_view(),
        name="model-promote",
    ),
    path("predictors/<slug:slug>/rollback", registry_api.RollbackView.as_view(), name="predictor-rollback"),
    path("predictors/<slug:slug>/drift", registry_api.DriftHistoryView.as_view(), name="predictor-drift"),
    path("training-runs/<int:run_id>", registry_api.TrainingRunView.as_view(), name="training-run-detail"),
    path("review/claim", review_api.ClaimView.as_view(), name="review-claim"),
    path("review/tasks/<int:task_id>/decision", review_api.DecisionView.as_view(), name="review-decision"),
    path("review/tasks/<int:task_id>/release", review_api.ReleaseView.as_view(), name="review-release"),
    path("review/tasks/<int:task_id>/extend", review_api.ExtendView.as_view(), name="review-extend"),
    path("review/stats", review_api.ReviewStatsView.as_view(), name="review-stats"),
    path("predictors/<slug:slug>/appeals", review_api.AppealStatsView.as_view(), name="predictor-appeals"),
    path("appeal/<str:token>", appeal_views.AppealView.as_view(), name="appeal"),
    path("appeal/<str:token>/status", appeal_views.AppealStatusView.as_view(), name="appeal-status"),
    re_path(r"^appeal(?:/(?P<rest>.*))?$", appeal_views.appeal_not_found),
    path("predictors/<slug:slug>/dataset", export_api.DatasetView.as_view(), name="predictor-dataset"),
    path("webhooks/deliveries", webhooks_api.WebhookDeliveryListView.as_view(), name="webhook-deliveries"),
    path("webhooks/deliveries/<int:delivery_id>", webhooks_api.WebhookDeliveryDetailView.as_view(), name="webhook-delivery"),
    path(
        "webhooks/deliveries/<int:delivery_id>/redeliver",
        webhooks_api.WebhookRedeliverView.as_view(),
        name="webhook-redeliver",
    ),
    path("healthz", gateway_api.HealthView.as_view(), name="healthz"),
    path("readyz", gateway_api.ReadyView.as_view(), name="readyz"),
    path("metrics", gateway_metrics.metrics_view, name="metrics"),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/", admin.site.urls),
]

handler400 = "gateway.errors.handler400"
handler403 = "gateway.errors.handler403"
handler404 = "gateway.errors.handler404"
handler500 = "gateway.errors.handler500"
