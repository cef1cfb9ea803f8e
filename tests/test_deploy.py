"""The deployment files ask for commands and settings that exist.

No Docker engine runs here. The compose files are read with ``yaml.safe_load`` and checked
against what would break a user's ``docker compose up``: every command a service runs
parses with automl's own CLI parser, every ``AUTOML_*`` variable named anywhere in the
Dockerfile or a compose file is a real setting, PostgreSQL is health-checked and kept on
a volume, and the GPU override reserves GPUs for the workers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from automl.cli.main import build_parser
from automl.config import Limits, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
COMPOSE_FILES = sorted(ROOT.glob("docker-compose*.yml"))

AUTOML_VARIABLE = re.compile(r"\bAUTOML_[A-Z0-9_]+")
INTERPOLATION = re.compile(r"\$\{\w+:?-(?P<default>[^}]*)\}")


def load_compose(path: Path) -> dict[str, Any]:
    """A compose file as YAML data (anchors and ``<<`` merges resolved)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path.name
    return data


def automl_services() -> set[str]:
    """The services of docker-compose.yml that run the image built from this repository."""
    services = load_compose(COMPOSE)["services"]
    return {name for name, service in services.items() if "build" in service}


def service_commands() -> dict[str, list[str]]:
    """``file:service -> argv`` for every command an automl service runs, in every compose
    file, with ``${VAR:-default}`` taking its default."""
    ours = automl_services()
    return {
        f"{path.name}:{name}": [
            INTERPOLATION.sub(r"\g<default>", word) for word in service["command"]
        ]
        for path in COMPOSE_FILES
        for name, service in load_compose(path)["services"].items()
        if name in ours and "command" in service
    }


COMMANDS = service_commands()


def settings_variables() -> set[str]:
    """Every environment variable that ``Settings`` or ``Limits`` reads."""
    return {
        f"{model.model_config['env_prefix']}{field.upper()}"
        for model in (Settings, Limits)
        for field in model.model_fields
    }


def dockerfile_exec_form(keyword: str) -> list[str]:
    """The JSON argument list of the Dockerfile's (last) ``keyword`` instruction."""
    found = re.findall(rf"^{keyword}\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert found, f"the Dockerfile has no exec-form {keyword}"
    return json.loads(found[-1])


def assert_parses(argv: list[str]) -> None:
    """Fails unless ``automl ARGV`` parses: the subcommand and every flag exist."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`automl {' '.join(argv)}` does not parse (exit code {exc.code})")


@pytest.mark.parametrize("where", sorted(COMMANDS))
def test_every_compose_command_is_an_automl_command(where: str) -> None:
    assert_parses(COMMANDS[where])


def test_the_image_runs_automl_with_a_command_that_parses() -> None:
    assert dockerfile_exec_form("ENTRYPOINT") == ["automl"]
    assert_parses(dockerfile_exec_form("CMD"))


@pytest.mark.parametrize("path", [DOCKERFILE, *COMPOSE_FILES], ids=lambda path: path.name)
def test_every_automl_variable_is_a_setting(path: Path) -> None:
    unknown = set(AUTOML_VARIABLE.findall(path.read_text())) - settings_variables()
    assert not unknown, f"{path.name} names variables that no setting reads: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(automl_services()))
def test_compose_environment_values_are_valid_settings(name: str) -> None:
    environment = load_compose(COMPOSE)["services"][name].get("environment", {})
    prefix = Settings.model_config["env_prefix"]
    Settings(**{key.removeprefix(prefix).lower(): value for key, value in environment.items()})


def test_compose_runs_a_health_checked_postgres_on_a_volume() -> None:
    compose = load_compose(COMPOSE)
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    volumes = {mount.split(":")[0] for mount in postgres["volumes"]}
    assert volumes & set(compose["volumes"]), "the database must outlive its container"
    for name in automl_services():
        service = compose["services"][name]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert make_url(service["environment"]["AUTOML_STORAGE"]).host == "postgres", name


def test_gpu_override_reserves_nvidia_gpus_for_the_worker() -> None:
    services = load_compose(COMPOSE_GPU)["services"]
    assert set(services) <= set(load_compose(COMPOSE)["services"]), "an override only extends"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
