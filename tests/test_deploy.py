"""The deployment files agree with the code: Dockerfile, docker-compose*.yml, .dockerignore.

No Docker engine runs here. The files are parsed and checked against what they must
match: the CLI's parser (subcommands and flags), the ``Settings`` fields behind the
``AUTOML_*`` variables, the paths they copy, and each other (service names, credentials,
ports, volumes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import URL, make_url

from automl.cli.main import build_parser
from automl.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERIGNORE = ROOT / ".dockerignore"

AUTOML_SERVICES = {"api": "serve", "worker": "worker"}  # service -> its automl subcommand
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


# --- helpers -----------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continued lines joined, comments and blanks dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops these, also between continued lines
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, arguments = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The variables the image's ENV instructions set (``K=V ...`` and ``K V`` forms)."""
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword != "ENV":
            continue
        if "=" not in arguments.split(" ", 1)[0]:
            key, _, value = arguments.partition(" ")
            env[key] = value.strip()
            continue
        for token in shlex.split(arguments):
            key, sep, value = token.partition("=")
            assert sep, f"malformed ENV token {token!r}"
            env[key] = value
    return env


def exec_form(arguments: str) -> list[str]:
    """An instruction's JSON (exec form) argument list."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"not a JSON list: {arguments}"
    assert all(isinstance(item, str) for item in value), arguments
    return value


def subcommands() -> set[str]:
    """The subcommands ``automl`` accepts, read from its parser."""
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parses ``automl ARGV`` as the container's entrypoint would."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`automl {shlex.join(argv)}` does not parse (exit code {exc.code})")


def settings_field(variable: str) -> str | None:
    """The ``Settings`` field an ``AUTOML_*`` variable sets, or None if there is none."""
    name = variable.removeprefix("AUTOML_").lower()
    return name if name in Settings.model_fields else None


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings`` as a process with exactly these ``AUTOML_*`` variables reads them."""
    for name in list(os.environ):
        if name.upper().startswith("AUTOML_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("AUTOML_"):
            monkeypatch.setenv(name, value)
    return Settings()


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?P<default>:?-[^}]*)?\}")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with every variable unset: each takes its default."""
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if not isinstance(value, str):
        return value

    def default(match: re.Match[str]) -> str:
        assert match["default"], f"${{{match['name']}}} needs a default (${{VAR:-default}})"
        return match["default"].removeprefix(":").removeprefix("-")

    escaped = value.replace("$$", "\0")
    result = _VARIABLE.sub(default, escaped)
    assert "$" not in result, f"unsupported interpolation in {value!r}"
    return result.replace("\0", "$")


def load_compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path.name
    return interpolate(data)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``K=V`` list), values as strings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def builds_this_dockerfile(service: dict[str, Any]) -> bool:
    """Whether a service's image is built from the repository's Dockerfile."""
    build = service.get("build")
    if isinstance(build, dict):
        if build.get("dockerfile", "Dockerfile") != "Dockerfile":
            return False
        build = build.get("context", ".")
    return build in (".", "./")


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``depends_on`` in its long form (the short list form has no condition)."""
    value = service.get("depends_on") or {}
    if isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    return value


def container_ports(service: dict[str, Any]) -> set[int]:
    """The container side of a service's published ``ports``."""
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def named_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume, for a service's named-volume mounts."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume" and entry.get("source"):
                mounts[entry["target"]] = entry["source"]
            continue
        source, _, rest = str(entry).partition(":")
        if rest and not source.startswith(("/", ".", "~", "$")):
            mounts[rest.split(":")[0]] = source
    return mounts


def volume_holding(service: dict[str, Any], path: str) -> str | None:
    """The named volume mounted at ``path`` or at a folder above it."""
    target = PurePosixPath(path)
    for mount, volume in named_mounts(service).items():
        if target == PurePosixPath(mount) or PurePosixPath(mount) in target.parents:
            return volume
    return None


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out ``path`` (relative, ``/``-separated)."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _ignore_regex(os.path.normpath(pattern.removeprefix("!")).strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negated
    return result


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def image_env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    return dockerfile_env(dockerfile)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def effective_env(service: dict[str, Any], image_env: dict[str, str]) -> dict[str, str]:
    """The environment a service's container gets: the image's ENV under the service's."""
    base = image_env if builds_this_dockerfile(service) else {}
    return {**base, **service_env(service)}


def instruction(dockerfile: list[tuple[str, str]], keyword: str) -> str:
    """The arguments of the last ``keyword`` instruction (the one that takes effect)."""
    found = [arguments for name, arguments in dockerfile if name == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_builds_on_python_slim(dockerfile: list[tuple[str, str]]) -> None:
    image = instruction(dockerfile, "FROM").split()[0]
    assert image.startswith("python:3.11-slim")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11", "the base image's Python must satisfy requires-python"


def test_entrypoint_is_the_automl_script(dockerfile: list[tuple[str, str]]) -> None:
    assert exec_form(instruction(dockerfile, "ENTRYPOINT")) == ["automl"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "automl" in scripts


def test_default_command_is_a_subcommand_that_parses(
    dockerfile: list[tuple[str, str]],
) -> None:
    command = exec_form(instruction(dockerfile, "CMD"))
    assert command and command[0] in subcommands()
    assert parse_cli(command).command == command[0]


def test_image_env_names_are_settings_fields(image_env: dict[str, str]) -> None:
    automl_vars = [name for name in image_env if name.startswith("AUTOML_")]
    assert {"AUTOML_STORAGE", "AUTOML_ARTIFACTS_DIR", "AUTOML_HOST", "AUTOML_PORT"} <= set(
        automl_vars
    )
    unknown = [name for name in automl_vars if settings_field(name) is None]
    assert not unknown, f"not Settings fields: {unknown}; fields: {sorted(Settings.model_fields)}"


def test_image_env_values_are_valid_settings(
    image_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(image_env, monkeypatch)
    assert settings.host == "0.0.0.0", "a server on 127.0.0.1 is unreachable from outside"
    assert make_url(settings.storage).get_backend_name() == "sqlite"


def test_image_data_lives_in_a_volume(
    dockerfile: list[tuple[str, str]], image_env: dict[str, str]
) -> None:
    volumes = {
        PurePosixPath(path)
        for keyword, arguments in dockerfile
        if keyword == "VOLUME"
        for path in (exec_form(arguments) if arguments.startswith("[") else arguments.split())
    }
    database = make_url(image_env["AUTOML_STORAGE"]).database
    assert database and PurePosixPath(database).is_absolute()
    for path in (PurePosixPath(database), PurePosixPath(image_env["AUTOML_ARTIFACTS_DIR"])):
        assert any(volume in path.parents for volume in volumes), f"{path} is not in a VOLUME"


def test_copy_sources_exist_and_reach_the_build_context(
    dockerfile: list[tuple[str, str]],
) -> None:
    patterns = dockerignore_patterns()
    copies = [arguments for keyword, arguments in dockerfile if keyword in ("COPY", "ADD")]
    assert copies
    copied = set()
    for arguments in copies:
        tokens = [token for token in shlex.split(arguments) if not token.startswith("--")]
        assert "--from" not in arguments, "a single-stage build copies from the context only"
        *sources, _destination = tokens
        assert sources, arguments
        matched = [path for source in sources for path in sorted(ROOT.glob(source.rstrip("/")))]
        assert matched, f"COPY {arguments}: nothing in the repository matches"
        for source in sources:
            if not any(ch in source for ch in "*?["):
                assert (ROOT / source).exists(), f"COPY source {source} does not exist"
        for path in matched:
            relative = path.relative_to(ROOT).as_posix()
            copied.add(relative)
            assert not ignored(relative, patterns), f"{relative} is excluded by .dockerignore"
            for file in path.rglob("*") if path.is_dir() else []:
                if file.suffix in (".py", ".yaml", ".yml", ".json"):
                    inner = file.relative_to(ROOT).as_posix()
                    assert not ignored(inner, patterns), f"{inner} is excluded by .dockerignore"
    assert {"pyproject.toml", "automl", "search_spaces"} <= copied


def test_image_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    user = instruction(dockerfile, "USER").split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_probes_health_without_curl(
    dockerfile: list[tuple[str, str]], image_env: dict[str, str]
) -> None:
    from automl.api.routes.health import router

    healthcheck = instruction(dockerfile, "HEALTHCHECK")
    assert " CMD " in f" {healthcheck}"
    command = exec_form(healthcheck.split("CMD", 1)[1].strip())
    assert command[0] == "python" and "urllib" in command[-1] and "curl" not in command
    assert "/health" in command[-1]
    assert "/health" in {route.path for route in router.routes}
    assert "AUTOML_PORT" in command[-1] or image_env["AUTOML_PORT"] in command[-1]


def test_image_exposes_the_api_port(
    dockerfile: list[tuple[str, str]], image_env: dict[str, str]
) -> None:
    exposed = {port.split("/")[0] for port in instruction(dockerfile, "EXPOSE").split()}
    assert image_env["AUTOML_PORT"] in exposed


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_has_the_services_and_volumes(compose: dict[str, Any]) -> None:
    assert {"postgres", "api", "worker", "dashboard"} <= set(compose["services"])
    assert {"pgdata", "artifacts"} <= set(compose.get("volumes") or {})


@pytest.mark.parametrize("name", AUTOML_SERVICES)
def test_service_command_parses(name: str, services: dict[str, Any]) -> None:
    command = services[name]["command"]
    assert isinstance(command, list), "use the exec (list) form"
    assert command[0] in subcommands()
    assert parse_cli(command).command == AUTOML_SERVICES[name]


def test_worker_device_is_valid(services: dict[str, Any]) -> None:
    args = parse_cli(services["worker"]["command"])
    assert args.device is None or DEVICE.fullmatch(args.device)


def test_api_and_worker_run_this_image(services: dict[str, Any]) -> None:
    api, worker = services["api"], services["worker"]
    assert builds_this_dockerfile(api)
    assert builds_this_dockerfile(worker) or worker.get("image")
    assert api.get("image") == worker.get("image")


@pytest.mark.parametrize("name", AUTOML_SERVICES)
def test_service_env_names_are_settings_fields(
    name: str, services: dict[str, Any], image_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = service_env(services[name])
    unknown = [key for key in env if key.startswith("AUTOML_") and settings_field(key) is None]
    assert not unknown, f"{name}: not Settings fields: {unknown}"
    settings_from(effective_env(services[name], image_env), monkeypatch)  # values validate


@pytest.mark.parametrize("name", AUTOML_SERVICES)
def test_storage_is_the_postgres_service(
    name: str, services: dict[str, Any], image_env: dict[str, str]
) -> None:
    from automl.store import normalize_url

    url = effective_env(services[name], image_env)["AUTOML_STORAGE"]
    assert_points_at_postgres(make_url(url), services)
    # The image installs psycopg 3 only (the "postgres" extra): the URL must select it.
    assert make_url(normalize_url(url)).get_driver_name() == "psycopg"


def assert_points_at_postgres(url: URL, services: dict[str, Any]) -> None:
    postgres = service_env(services["postgres"])
    assert url.get_backend_name() == "postgresql"
    assert url.host == "postgres" and url.host in services
    assert url.port in (None, 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.database == postgres.get("POSTGRES_DB", postgres["POSTGRES_USER"])


def test_postgres_healthcheck_uses_pg_isready(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].split(":")[0] == "postgres"
    test = postgres["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    assert "pg_isready" in text
    env = service_env(postgres)
    assert env["POSTGRES_USER"] in text and env.get("POSTGRES_DB", "") in text
    mounts = named_mounts(postgres)
    assert mounts.get("/var/lib/postgresql/data") == "pgdata"


@pytest.mark.parametrize("name", AUTOML_SERVICES)
def test_service_waits_for_healthy_postgres(name: str, services: dict[str, Any]) -> None:
    assert depends_on(services[name]).get("postgres", {}).get("condition") == "service_healthy"


def test_api_port_mapping_matches_settings(
    services: dict[str, Any], image_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(effective_env(services["api"], image_env), monkeypatch)
    assert settings.port in container_ports(services["api"])
    assert settings.host == "0.0.0.0", "the published port needs a server on all interfaces"


def test_artifacts_volume_is_shared_by_api_and_worker(
    compose: dict[str, Any], services: dict[str, Any], image_env: dict[str, str]
) -> None:
    holders = {}
    for name in AUTOML_SERVICES:
        directory = effective_env(services[name], image_env)["AUTOML_ARTIFACTS_DIR"]
        holders[name] = (directory, volume_holding(services[name], directory))
    (api_dir, api_volume), (worker_dir, worker_volume) = holders["api"], holders["worker"]
    assert api_dir == worker_dir
    assert api_volume is not None and api_volume == worker_volume == "artifacts"
    assert api_volume in compose["volumes"]


def test_worker_stops_gracefully_and_skips_the_api_healthcheck(
    services: dict[str, Any],
) -> None:
    worker = services["worker"]
    grace = re.fullmatch(r"(\d+)s", str(worker["stop_grace_period"]))
    assert grace and int(grace[1]) >= 30
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert (worker.get("healthcheck") or {}).get("disable") is True


def test_dashboard_reads_the_same_database(services: dict[str, Any]) -> None:
    dashboard = services["dashboard"]
    assert dashboard["image"].split(":")[0] == "ghcr.io/optuna/optuna-dashboard"
    command = dashboard["command"]
    storage = command if isinstance(command, str) else command[0]
    url = make_url(storage)
    assert_points_at_postgres(url, services)
    assert url.get_driver_name() == "psycopg2", "the official image ships psycopg2"
    assert 8080 in container_ports(dashboard)
    assert set(depends_on(dashboard)) & {"postgres", "api"}


# --- docker-compose.gpu.yml ---------------------------------------------------------------


def test_gpu_override_reserves_nvidia_gpus_for_workers(services: dict[str, Any]) -> None:
    override = load_compose(COMPOSE_GPU)["services"]
    assert set(override) <= set(services), "an override may only extend existing services"
    worker = override["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices and all(device["driver"] == "nvidia" for device in devices)
    assert all("gpu" in device["capabilities"] for device in devices)
    for device in devices:
        assert device.get("count", "all") == "all" or isinstance(device["count"], int)
        assert not ("count" in device and "device_ids" in device)
    command = worker.get("command", services["worker"]["command"])
    args = parse_cli(command)
    assert args.command == "worker"
    assert args.device is None or DEVICE.fullmatch(args.device)


# --- .dockerignore --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "automl.db",
        "automl.db-wal",
        "automl.db-shm",
        "automl-artifacts/1/weights.pt",
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "benchmarks/bench.py",
        "automl/__pycache__/config.cpython-311.pyc",
    ],
)
def test_dockerignore_leaves_out_local_state(path: str) -> None:
    assert ignored(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "automl/config.py", "search_spaces/x.yaml"]
)
def test_dockerignore_keeps_what_the_image_needs(path: str) -> None:
    assert not ignored(path, dockerignore_patterns())
