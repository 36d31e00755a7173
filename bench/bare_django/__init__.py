"""The issue's calibration point: a bare Django + DRF view that does one ORM INSERT and the
ONNX call, and nothing else (no auth, throttle, validation, routing, logging or metrics).

Served by gunicorn under the same configuration as Oz and the floors (bench/predict_http.py,
target `bare django-drf`). It sits between the bare WSGI floors and Oz: how far it falls
below `floor onnx` is what Django and DRF themselves cost on this machine, and Oz's ratio to
it is what Oz's own work (everything a production /predict does) costs on top.

A view as a team would write it first, on the most generous footing Django offers: no
middleware at all (the floor of any Django app; Oz keeps its security headers, request ids,
metrics and 503 handling), persistent database connections, JSON in and out only, and what
is loaded at start frozen out of the garbage collector's walk, as Oz's web processes do."""
