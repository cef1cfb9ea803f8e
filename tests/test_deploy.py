"""The deployment files ask for commands and settings that exist.

No Docker engine runs here. The compose files are read with ``yaml.safe_load`` and checked
against what would break a user's ``docker compose up``: every command a service runs
parses with automl's own CLI parser, every ``AUTOML_*`` variable named anywhere in the
Dockerfile or a compose file is a real setting, PostgreSQL is health-checked and kept on
a volume, and the GPU override reserves GPUs for the workers. And against what would leak:
no password or key is written into these files (only ``${VAR:?...}`` interpolations, set
from the environment or ``.env``), the image runs as a non-root user, and the dashboard
(which has no login) is published on the loopback address only. And against what would
stop a trial or the API: the image and every service (GPU override included) agree on
the data root (a mount of the user's folder), the decode cache and the artifacts (on a
named volume the image's user owns), workers do not each take every core, and the
Dockerfile's own ``docker run`` example starts the API.
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

from automl.cli.exposure import check_exposure
from automl.cli.main import build_parser, main
from automl.config import Limits, Settings
from automl.store import open_store_from

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


def test_the_image_works_in_a_folder_its_user_owns() -> None:
    """Found by a tester: under WORKDIR /app (root's), ``docker compose exec api automl
    report ID`` could not write its page, nor export or best --download their files."""
    instructions = dockerfile_instructions()
    user = [args for keyword, args in instructions if keyword == "USER"][-1]
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"][-1]
    homes = [
        words
        for words in _run_commands()
        if words[:1] == ["useradd"] and "--create-home" in words and words[-1] == user
    ]
    assert homes, f"{user} has no home made for it"
    assert workdir == f"/home/{user}", f"WORKDIR {workdir}: not {user}'s own folder"
    # The reviewer's catch: ``automl submit search_spaces/...`` as the compose file says.
    links = [words for words in _run_commands() if words[:2] == ["ln", "-s"]]
    assert ["ln", "-s", "/app/search_spaces", f"{workdir}/search_spaces"] in links
    assert "/app/search_spaces" in [
        "/app/" + args.split()[-1].strip("./").rstrip("/")
        for keyword, args in instructions
        if keyword == "COPY" and args.split()[0].rstrip("/") == "search_spaces"
    ]
    assert "automl submit search_spaces/" in COMPOSE.read_text()


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
    # Listening on every interface of its container, it must still refuse rebound names.
    command = dashboard["command"]
    assert command[command.index("--allowed-hosts") + 1] == "localhost"


# --- paths: where data, cache and artifacts live, and who can write them ----------------------

WRITABLE_SETTINGS = ("AUTOML_CACHE_DIR", "AUTOML_ARTIFACTS_DIR")
"""Folders a worker writes in: it refuses to start when it cannot (exit 2)."""
PATH_SETTINGS = ("AUTOML_DATA_ROOT", *WRITABLE_SETTINGS)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` of every Dockerfile instruction, continued lines joined and
    comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = re.findall(r"^([A-Z]+)\s+(.*)$", joined, re.MULTILINE)
    return [(keyword, arguments.strip()) for keyword, arguments in found]


def dockerfile_env() -> dict[str, str]:
    """What the image's ``ENV`` instructions set (``KEY=value`` pairs)."""
    pairs = [
        word.partition("=")
        for keyword, arguments in dockerfile_instructions()
        if keyword == "ENV"
        for word in shlex.split(arguments)
    ]
    return {key: value for key, _, value in pairs}


def dockerfile_volumes() -> list[Path]:
    """The image's ``VOLUME`` folders."""
    found = [json.loads(args) for keyword, args in dockerfile_instructions() if keyword == "VOLUME"]
    return [Path(folder) for folders in found for folder in folders]


def _within(path: Path | str, folder: Path | str) -> bool:
    path, folder = Path(path), Path(folder)
    return path == folder or folder in path.parents


def test_the_image_keeps_data_cache_and_artifacts_at_absolute_paths_on_its_volume() -> None:
    """Once unset: ``/app/data`` (absent) and ``/app/automl-cache`` (root's) under WORKDIR."""
    env = dockerfile_env()
    for name in PATH_SETTINGS:
        assert name in env and Path(env[name]).is_absolute(), f"the image does not set {name}"
    database = make_url(env["AUTOML_STORAGE"]).database
    for path in [*(env[name] for name in WRITABLE_SETTINGS), database]:
        assert any(_within(path, volume) for volume in dockerfile_volumes()), f"{path}: no VOLUME"


def _run_commands() -> list[list[str]]:
    """Each shell command of the Dockerfile's ``RUN`` instructions, split on ``&&``."""
    return [
        shlex.split(command)
        for keyword, arguments in dockerfile_instructions()
        if keyword == "RUN"
        for command in arguments.split("&&")
    ]


def test_the_image_creates_its_writable_folders_for_its_user() -> None:
    """The cache and artifacts folders exist in the image, owned by the USER it runs as, so
    a fresh named volume (which copies them) is writable too."""
    user = [args for keyword, args in dockerfile_instructions() if keyword == "USER"][-1]
    commands = _run_commands()
    made = [i for i, words in enumerate(commands) if words[:2] == ["mkdir", "-p"]]
    owned = [
        (i, words[-1])
        for i, words in enumerate(commands)
        if words[:2] == ["chown", "-R"] and words[2].split(":")[0] == user
    ]
    for name in WRITABLE_SETTINGS:
        folder = dockerfile_env()[name]
        created = [i for i in made if folder in commands[i][2:]]
        assert created, f"no `mkdir -p {folder}` ({name})"
        assert any(i > created[0] and _within(folder, path) for i, path in owned), (
            f"{folder} ({name}) is not chown-ed to {user} after it is created"
        )


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` applied to ``base`` as ``docker compose -f base -f override`` does for
    the keys used here: mappings merge, anything else is replaced."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def effective_services() -> dict[str, dict[str, Any]]:
    """``file:service`` -> each automl service as it runs with docker-compose.yml alone,
    and with each override on top of it."""
    base = load_compose(COMPOSE)["services"]
    found = {f"{COMPOSE.name}:{name}": base[name] for name in automl_services()}
    for path in COMPOSE_FILES:
        if path != COMPOSE:
            for name, service in load_compose(path)["services"].items():
                found[f"{path.name}:{name}"] = merged(base[name], service)
    return found


SERVICES = effective_services()


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """A service's volumes: container path -> (source, read-only), ``${VAR:-default}``
    taking its default."""
    found = {}
    for entry in service.get("volumes", []):
        source, target, *mode = interpolate(entry, {}).split(":")
        found[target] = (source, "ro" in mode)
    return found


def test_every_automl_service_reads_and_writes_the_same_paths() -> None:
    """The API checks a spec's paths where the workers read them; a GPU worker (override)
    finds them where a CPU worker does."""
    expected = {name: dockerfile_env()[name] for name in PATH_SETTINGS}
    for where, service in SERVICES.items():
        environment = service.get("environment", {})
        assert {name: environment.get(name) for name in PATH_SETTINGS} == expected, where
        assert mounts(service) == mounts(SERVICES[f"{COMPOSE.name}:api"]), where


@pytest.mark.parametrize("where", sorted(SERVICES))
def test_the_cache_and_artifacts_are_on_a_writable_named_volume(where: str) -> None:
    named = set(load_compose(COMPOSE).get("volumes", {}))
    found = mounts(SERVICES[where])
    for name in WRITABLE_SETTINGS:
        folder = SERVICES[where]["environment"][name]
        targets = [target for target in found if _within(folder, target)]
        assert targets, f"{where}: {name}={folder} is on no volume (lost with the container)"
        source, read_only = found[max(targets, key=len)]  # the innermost mount holds it
        assert source in named and not read_only, f"{where}: {folder} is on {source}"


@pytest.mark.parametrize("where", sorted(SERVICES))
def test_the_data_root_is_a_mount_of_the_users_folder(where: str) -> None:
    """Once no mount at all: the image's data root was an empty folder (or none)."""
    root = SERVICES[where]["environment"]["AUTOML_DATA_ROOT"]
    source, _ = mounts(SERVICES[where]).get(root, ("", False))
    assert source.startswith(("./", "/")), f"{where}: {root} is not a bind mount of a folder"


def _docker_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### One machine: `docker compose up`")
    return readme[start : readme.index("\n### ", start + 1)]


def test_the_readme_shows_where_to_put_images_and_a_spec_path_for_them() -> None:
    """The documented folder is the one mounted, and the example's spec path (relative to
    the data root) names the folder the example writes there."""
    section = _docker_section()
    source, _ = mounts(SERVICES[f"{COMPOSE.name}:worker"])["/data/datasets"]
    host = Path(source).as_posix()  # "./data" -> "data"
    assert f"`./{host}`" in section, "the README does not say where images go"
    written = re.search(r"python -m automl\.examples \S+ (?P<folder>\S+)", section)
    spec = re.search(r"path: (?P<path>[\w/.-]+)", section)
    assert written and spec, "no example of images and of a spec path for them"
    assert (Path(written["folder"]) / "train").as_posix() == f"{host}/{spec['path']}"


# --- threads: workers share the cores ----------------------------------------------------------


@pytest.mark.parametrize("where", sorted(w for w in SERVICES if w.endswith(":worker")))
def test_compose_workers_do_not_each_take_every_core(where: str) -> None:
    """``--scale worker=4`` once ran 4 workers on all cores each (2.5x slower)."""
    threads = SERVICES[where]["environment"].get("AUTOML_THREADS")
    assert threads is not None, f"{where}: AUTOML_THREADS unset, PyTorch takes every core"
    default = int(interpolate(threads, {}))
    assert default == 1, "one thread per worker never oversubscribes up to one per core"
    assert interpolate(threads, {"WORKER_THREADS": "4"}) == "4", "WORKER_THREADS sets it"
    assert Settings(threads=default).threads == default


def test_the_thread_setting_is_documented_where_workers_are_scaled() -> None:
    for text in (_docker_section(), COMPOSE.read_text()):
        assert "WORKER_THREADS" in text and "--scale worker=" in text


# --- the Dockerfile's own example --------------------------------------------------------------


def dockerfile_example() -> list[list[str]]:
    """The ``docker run`` command lines of the Dockerfile's opening comment, split."""
    header = []
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.removeprefix("#").strip())
    text = re.sub(r"\\\n", " ", "\n".join(header))
    lines = [line for line in text.splitlines() if line.startswith("docker run ")]
    return [shlex.split(line, comments=True) for line in lines]


DOCKER_RUN_FLAGS_WITH_VALUE = {"-v", "--volume", "-e", "--env", "-p", "--publish", "--gpus"}


def docker_run(words: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``docker run`` split into its volumes (container path -> source), its ``-e``
    variables and the automl arguments (the image's CMD when none)."""
    volumes, environment = {}, {}
    rest = iter(words[2:])
    for word in rest:
        if not word.startswith("-"):
            arguments = list(rest)
            break
        if word in DOCKER_RUN_FLAGS_WITH_VALUE:
            value = next(rest)
            if word in ("-v", "--volume"):
                source, target, *_ = value.split(":")
                volumes[target] = source
            elif word in ("-e", "--env"):
                key, _, val = value.partition("=")
                environment[key] = val
    else:
        pytest.fail(f"no image in {' '.join(words)}")
    return volumes, environment, arguments or dockerfile_exec_form("CMD")


def in_container(value: str, volumes: dict[str, str], tmp_path: Path) -> str:
    """``value`` with each mounted container path replaced by a folder standing for its
    source (the same source, the same folder), innermost mount first."""
    for target in sorted(volumes, key=len, reverse=True):
        local = tmp_path / re.sub(r"\W", "_", volumes[target])
        local.mkdir(exist_ok=True)
        value = re.sub(rf"(?<![\w.-]){re.escape(target)}(?=/|$)", str(local), value)
    return value


def test_the_dockerfile_example_starts_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once ``docker run -p 8000:8000 -v automl-data:/data automl`` alone: ``serve`` on
    0.0.0.0 with no key exits 2. Each example line runs here in turn, its volumes standing
    in for folders: ``keys create`` for real, ``serve`` up to its refusal check."""
    example = dockerfile_example()
    assert any(docker_run(words)[2] == ["serve"] for words in example), "no API example"
    for words in example:
        volumes, environment, argv = docker_run(words)
        assert_parses(argv)
        for key, value in {**dockerfile_env(), **environment}.items():
            monkeypatch.setenv(key, in_container(value, volumes, tmp_path))
        if argv[0] == "keys":
            assert main(argv) == 0
        elif argv[0] == "serve":
            settings = Settings()
            store = open_store_from(settings)
            try:
                check_exposure(settings, store)  # raises the CliError that exits 2
            finally:
                store.close()
