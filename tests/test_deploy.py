"""The deployment files ask for commands and settings that exist.

No Docker engine runs here. The compose files are read with ``yaml.safe_load`` and checked
against what would break a user's ``docker compose up``: every command a service runs
parses with automl's own CLI parser, every ``AUTOML_*`` variable named anywhere in the
Dockerfile or a compose file is a real setting, PostgreSQL is health-checked and kept on
a volume, and the GPU override reserves GPUs for the workers. And against what would leak:
no password or key is written into these files (only ``${VAR:?...}`` interpolations, set
from the environment or ``.env``), the image runs as a non-root user, and the dashboard
(which has no login) is published on the loopback address only.
"""

from __future__ import annotations

import json
import re
import shlex
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
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
URL_PASSWORD = re.compile(r"://[^/:@\s]+:(?P<password>[^@]+)@")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
USER_ENVIRONMENT = {"POSTGRES_PASSWORD": "from-dot-env"}
"""What a user sets in the environment or ``.env`` before ``docker compose up``."""


def interpolate(text: str, environment: dict[str, str]) -> str:
    """``text`` with ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` replaced the way
    ``docker compose`` does; a required variable missing from ``environment`` fails."""

    def value(match: re.Match[str]) -> str:
        name, op = match["name"], match["op"] or ""
        if name in environment:
            return environment[name]
        if op.endswith("?"):
            pytest.fail(f"{name} is required ({match['arg']}) and not set")
        return match["arg"] if op.endswith("-") else ""

    return INTERPOLATION.sub(value, text)


def strings(node: Any) -> list[str]:
    """Every string (keys and values) in parsed YAML."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings(key) + strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return [node] if isinstance(node, str) else []


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
        f"{path.name}:{name}": [interpolate(word, {}) for word in service["command"]]
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


# ``docker compose run --rm api ARGS`` / ``docker compose exec api automl ARGS`` as the
# compose file and the README tell users to type them.
DOCUMENTED_COMMAND = re.compile(
    r"docker compose (?:run --rm api|exec api automl) (?P<argv>[^#`\n]+)"
)


def documented_commands() -> list[str]:
    """The automl command lines that docker-compose.yml and the README show."""
    texts = (COMPOSE.read_text(), (ROOT / "README.md").read_text())
    return [match["argv"].strip() for text in texts for match in DOCUMENTED_COMMAND.finditer(text)]


@pytest.mark.parametrize("argv", documented_commands())
def test_documented_compose_commands_parse(argv: str) -> None:
    assert_parses(shlex.split(argv))


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
    Settings(
        **{
            key.removeprefix(prefix).lower(): interpolate(value, USER_ENVIRONMENT)
            for key, value in environment.items()
        }
    )


def test_compose_runs_a_health_checked_postgres_on_a_volume() -> None:
    compose = load_compose(COMPOSE)
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    volumes = {mount.split(":")[0] for mount in postgres["volumes"]}
    assert volumes & set(compose["volumes"]), "the database must outlive its container"
    for name in automl_services():
        service = compose["services"][name]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        url = make_url(interpolate(service["environment"]["AUTOML_STORAGE"], USER_ENVIRONMENT))
        assert url.host == "postgres", name
        assert url.password == USER_ENVIRONMENT["POSTGRES_PASSWORD"], name


def test_gpu_override_reserves_nvidia_gpus_for_the_worker() -> None:
    services = load_compose(COMPOSE_GPU)["services"]
    assert set(services) <= set(load_compose(COMPOSE)["services"]), "an override only extends"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def _is_required_variable(text: str) -> bool:
    """Whether ``text`` is only ``${VAR}`` or ``${VAR:?error}``: a value with no default."""
    match = INTERPOLATION.fullmatch(text.strip())
    return match is not None and not (match["op"] or "").endswith("-")


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_files_hold_no_secret(path: Path) -> None:
    """Passwords and keys come from the environment: never a literal, never a default."""
    compose = load_compose(path)
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        if isinstance(environment, list):  # the KEY=value form
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert _is_required_variable(str(value)), f"{name}: {key} is in {path.name}"
    for text in strings(compose):
        for match in URL_PASSWORD.finditer(text):
            assert _is_required_variable(match["password"]), f"a password in a URL: {text!r}"


def test_the_dockerfile_bakes_no_secret() -> None:
    """No password or key in the image: not in ENV or ARG, not in a URL."""
    text = DOCKERFILE.read_text()
    for keyword, name in re.findall(r"^(ENV|ARG)\s+(\w+)", text, re.MULTILINE):
        assert not SECRET_NAME.search(name), f"the Dockerfile sets {name} with {keyword}"
    for name in re.findall(r"^\s+(\w+)=", text, re.MULTILINE):  # continued ENV lines
        assert not SECRET_NAME.search(name), f"the Dockerfile sets {name}"
    assert not URL_PASSWORD.search(text), "the Dockerfile holds a URL with a password"


def test_the_image_runs_as_a_non_root_user() -> None:
    instructions = re.findall(r"^([A-Z]+)\s+(.*)$", DOCKERFILE.read_text(), re.MULTILINE)
    users = [i for i, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users, "the Dockerfile has no USER: the container would run as root"
    user = instructions[users[-1]][1].split(":")[0].strip()
    assert user not in {"root", "0"}, f"USER {user}"
    later = [keyword for keyword, _ in instructions[users[-1] :] if keyword == "RUN"]
    assert not later, "RUN after USER: keep the image's setup before switching users"


def test_the_default_image_has_cuda_torch_and_a_cpu_option() -> None:
    """PyPI's torch wheels are CUDA builds: the default build must not pin the CPU index,
    and ``TORCH_INDEX_URL`` selects it for CPU-only images."""
    text = DOCKERFILE.read_text()
    defaults = re.findall(r"^ARG\s+TORCH_INDEX_URL(?:=(.*))?$", text, re.MULTILINE)
    assert defaults, "no TORCH_INDEX_URL build arg"
    assert "cpu" not in defaults[0], "the default build would install CPU-only torch"
    assert "$TORCH_INDEX_URL" in text, "TORCH_INDEX_URL is declared but not used"


def test_the_dashboard_is_published_on_loopback_only() -> None:
    """optuna-dashboard has no login: it must not answer on every interface."""
    dashboard = load_compose(COMPOSE)["services"]["dashboard"]
    for port in dashboard.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"dashboard port {port!r} is public"
