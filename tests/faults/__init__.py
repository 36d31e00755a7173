"""Fault injection against real processes: gunicorn serving Oz on the test PostgreSQL, a real
Celery worker and beat on the test Redis, and the two servers themselves stopped, restarted
or starved under load (scripts/testenv.sh starts them; scripts/testenv-ctl.sh stops and
starts them). Each fault test appends its figures (requests sent, errors seen, items lost)
to test-artifacts/faults.json."""
