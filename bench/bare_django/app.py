"""The WSGI app and its one URL (ROOT_URLCONF): `POST /` answers {"scores": [...]} after
storing the input and the scores; `GET /` is the readiness probe."""
import gc
import os
import uuid

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_django.settings"
os.environ["BENCH_MODEL_KIND"] = "onnx"

from django.core.wsgi import get_wsgi_application
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

application = get_wsgi_application()

from bench.bare_django.models import BareDjangoPrediction  # noqa: E402
from bench.minimal_wsgi import _scores  # noqa: E402  (the same ONNX call as `floor onnx`)


class PredictView(APIView):
    def get(self, request):
        return Response("ok")

    def post(self, request):
        scores = _scores(request.data)
        BareDjangoPrediction.objects.create(id=uuid.uuid4(), input=request.data["input"], scores=scores)
        return Response({"scores": scores})


urlpatterns = [path("", PredictView.as_view())]

# As config/wsgi.py does for Oz: without it, full collections walk everything loaded above.
gc.collect()
gc.freeze()
