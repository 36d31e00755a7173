"""docker-compose.yml and the Dockerfile describe the deployment DESIGN.md promises.

No Docker engine is needed (or used): the files are parsed and checked. No database either.
"""

import json
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = ("web", "worker", "beat")


# --- helpers: normalise the several spellings compose and Dockerfiles allow -------------


def as_argv(command):
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_of(service):
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def mounts_of(service):
    """(source, target) of each volume mount, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2:
                mounts.append((parts[0], parts[1]))
        else:
            mounts.append((volume.get("source"), volume.get("target")))
    return mounts


def dockerfile_instructions():
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def exec_or_shell_form(args):
    if args.startswith("["):
        return [str(part) for part in json.loads(args)]
    return shlex.split(args)


def dockerfile_default_argv():
    """What `docker run IMAGE` executes: the last ENTRYPOINT followed by the last CMD."""
    entrypoint, cmd = [], []
    for keyword, args in dockerfile_instructions():
        if keyword == "ENTRYPOINT":
            entrypoint = exec_or_shell_form(args)
        elif keyword == "CMD":
            cmd = exec_or_shell_form(args)
    return entrypoint + cmd


def celery_invocation(argv):
    """(app, subcommand) of a `celery ...` command line, or (None, None)."""
    if "celery" not in argv:
        return None, None
    rest = argv[argv.index("celery") + 1 :]
    app = subcommand = None
    i = 0
    while i < len(rest):
        token = rest[i]
        if token in ("-A", "--app"):
            app = rest[i + 1] if i + 1 < len(rest) else None
            i += 2
            continue
        if token.startswith("--app="):
            app = token.split("=", 1)[1]
        elif not token.startswith("-") and subcommand is None:
            subcommand = token
        i += 1
    return app, subcommand


def healthcheck_text(service):
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return ""
    test = check.get("test")
    if isinstance(test, list):
        if test and test[0] == "NONE":
            return ""
        return " ".join(str(part) for part in test)
    return str(test or "")


def service_argv(services, name):
    """The command a service runs: its compose `command`, else the image's default."""
    service = services[name]
    if service.get("command") is not None:
        argv = as_argv(service["command"])
        if service.get("entrypoint") is not None:
            argv = as_argv(service["entrypoint"]) + argv
        return argv
    return dockerfile_default_argv()


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


# --- docker-compose.yml -----------------------------------------------------------------


def test_the_five_services_exist(services):
    missing = {"web", "worker", "beat", "postgres", "redis"} - set(services)
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_web_runs_gunicorn_on_the_wsgi_app(services):
    argv = service_argv(services, "web")
    assert "gunicorn" in [Path(part).name for part in argv[:3]], argv
    assert any(part.startswith("config.wsgi") for part in argv), argv


def test_worker_runs_a_celery_worker(services):
    assert celery_invocation(service_argv(services, "worker")) == (
        "config.celery_app",
        "worker",
    )


def test_beat_runs_celery_beat(services):
    assert celery_invocation(service_argv(services, "beat")) == (
        "config.celery_app",
        "beat",
    )


@pytest.mark.parametrize(
    ("name", "must_mention"),
    [("web", "/healthz"), ("postgres", "pg_isready"), ("redis", "ping")],
)
def test_service_has_a_real_healthcheck(services, name, must_mention):
    text = healthcheck_text(services[name])
    assert text, f"{name} has no enabled healthcheck"
    assert must_mention in text, (
        f"{name} healthcheck does not use {must_mention}: {text}"
    )


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_non_http_services_do_not_inherit_the_http_healthcheck(services, name):
    # The image's HEALTHCHECK probes /healthz; worker and beat serve no HTTP, so they
    # must replace or disable it or Docker marks them unhealthy forever.
    check = services[name].get("healthcheck")
    assert check, f"{name} must override the image HEALTHCHECK"
    assert "/healthz" not in healthcheck_text(services[name])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_get_production_settings_and_backends(services, name):
    env = env_of(services[name])
    assert env.get("DJANGO_SETTINGS_MODULE") == "config.settings.production"
    assert env.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    assert "@postgres:" in env["DATABASE_URL"], (
        "DATABASE_URL must point at the postgres service"
    )
    assert env.get("REDIS_URL", "").startswith("redis://redis:")
    assert env.get("DJANGO_ALLOWED_HOSTS"), (
        "production refuses to start without allowed hosts"
    )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_secret_key_must_be_supplied(services, name):
    # ${VAR:?message} makes compose refuse to start without it; no default secret.
    value = env_of(services[name]).get("DJANGO_SECRET_KEY", "")
    assert value.startswith("${DJANGO_SECRET_KEY:?"), value


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_postgres_and_redis(services, name):
    deps = depends_of(services[name])
    for backend in ("postgres", "redis"):
        assert backend in deps, f"{name} does not depend on {backend}"
        assert deps[backend].get("condition") == "service_healthy", (name, backend)


def runs_migrations(argv):
    return "manage.py migrate" in " ".join(argv)


def test_web_starts_after_migrations(services):
    if runs_migrations(service_argv(services, "web")):
        return  # web migrates in its own entry command
    migrators = [
        svc for svc in services if runs_migrations(service_argv(services, svc))
    ]
    assert migrators, "no service runs `manage.py migrate`"
    deps = depends_of(services["web"])
    assert any(
        deps.get(svc, {}).get("condition") == "service_completed_successfully"
        for svc in migrators
    ), f"web does not wait for {migrators} to finish"


def test_artifacts_volume_is_shared_by_web_and_worker(compose, services):
    named_volumes = set(compose.get("volumes") or {})
    sources = {}
    for name in ("web", "worker"):
        media_root = env_of(services[name]).get("OZ_MEDIA_ROOT")
        assert media_root, f"{name} has no OZ_MEDIA_ROOT"
        mounted = [
            src for src, target in mounts_of(services[name]) if target == media_root
        ]
        assert mounted, f"{name} mounts nothing at OZ_MEDIA_ROOT={media_root}"
        sources[name] = mounted[0]
    assert sources["web"] == sources["worker"], sources
    assert sources["web"] in named_volumes, f"{sources['web']} is not a named volume"


def test_postgres_keeps_its_data_in_a_named_volume(compose, services):
    named_volumes = set(compose.get("volumes") or {})
    data_mounts = [
        src
        for src, target in mounts_of(services["postgres"])
        if target == "/var/lib/postgresql/data"
    ]
    assert data_mounts and data_mounts[0] in named_volumes, mounts_of(
        services["postgres"]
    )


def test_backends_run_the_expected_major_versions(services):
    assert services["postgres"]["image"].split(":")[1].startswith("15")
    assert services["redis"]["image"].split(":")[1].startswith("7")


# --- Dockerfile -------------------------------------------------------------------------


def test_image_default_command_is_gunicorn():
    argv = dockerfile_default_argv()
    assert "gunicorn" in [Path(part).name for part in argv[:3]], argv
    assert "config.wsgi:application" in argv, argv


def test_image_runs_as_a_non_root_user():
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_image_healthcheck_hits_healthz():
    checks = [
        args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"
    ]
    assert checks and "/healthz" in checks[-1], checks


def test_build_time_secret_is_not_baked_into_the_image():
    instructions = dockerfile_instructions()
    assert any(
        keyword == "RUN" and "collectstatic" in args and "DJANGO_SECRET_KEY=" in args
        for keyword, args in instructions
    ), "collectstatic must run at build time with a throwaway secret"
    for keyword, args in instructions:
        if keyword in ("ENV", "ARG"):
            assert "DJANGO_SECRET_KEY" not in args, f"{keyword} {args}"
