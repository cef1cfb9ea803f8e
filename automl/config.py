"""Service settings, read from ``AUTOML_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STORAGE = "sqlite:///automl.db"


PROXY_SCHEME = "grpc"


def is_proxy_url(url: str | None) -> bool:
    """Whether a storage URL names an ``automl proxy`` (``grpc://host:port``); False for
    one that is no URL at all (a bracket left open), which opening it as a database
    reports."""
    if not url:
        return False
    try:
        return urlsplit(url).scheme == PROXY_SCHEME
    except ValueError:  # "Invalid IPv6 URL"
        return False


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (``localhost``, 127.x, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


MAX_INTERVAL_S = 7 * 86_400.0
"""Longest heartbeat, grace or reap interval (a week): a thread's wait refuses more than
``threading.TIMEOUT_MAX``, and a heartbeat timestamp past the platform's ``time_t``."""

MAX_POLL_INTERVAL_S = 3600.0
"""Longest sleep of an idle worker between polls (an hour)."""

MAX_ID = 2**31 - 1
"""The largest study id, trial number or count a request may name: the top of a signed
32-bit integer column (the store's ids), beyond which a database overflows."""


SWAGGER_UI_VERSION = "5.36.0"
"""The Swagger UI release the API's /docs page runs (``automl.api.docs_page``)."""
SWAGGER_UI_ASSETS = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"


class Settings(BaseSettings):
    """Settings shared by the API, the workers and the CLI.

    Every field can be set with an environment variable named ``AUTOML_<FIELD>``,
    e.g. ``AUTOML_STORAGE=postgresql://user@host/db``.
    """

    model_config = SettingsConfigDict(env_prefix="AUTOML_", extra="ignore")

    storage: str = Field(DEFAULT_STORAGE, description="SQLAlchemy URL of the Optuna storage.")
    artifacts_dir: Path = Field(
        Path("automl-artifacts"), description="Folder that keeps trial weights."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    url: str | None = Field(None, description="Base URL of a running API, for the CLI.")
    api_key: str | None = Field(
        None,
        repr=False,
        description="API key the CLI sends to `--url` as `Authorization: Bearer`.",
    )
    allow_anonymous: bool = Field(
        False,
        description="Let `automl serve` listen on a non-loopback address while no API key "
        "exists (anyone who reaches the port can then do anything; logged as a warning).",
    )
    docs_assets_url: str = Field(
        SWAGGER_UI_ASSETS,
        description="Where the API's /docs page loads Swagger UI (swagger-ui-bundle.js, "
        f"swagger-ui.css) from: a mirror of swagger-ui-dist {SWAGGER_UI_VERSION} for "
        "browsers without internet (they check each file's SHA-384: another release is "
        "refused).",
    )
    auth_cache_s: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Seconds the API trusts a looked-up API key (and whether any exists) "
        "before asking the database again: how long a revoked key keeps working.",
    )
    poll_interval: float = Field(
        2.0, gt=0, le=MAX_POLL_INTERVAL_S, description="Seconds an idle worker sleeps."
    )
    device: str = Field("auto", description="Device for workers: auto, cpu, cuda or cuda:N.")
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads per worker process (default: PyTorch's; under `automl up` "
        "and `automl worker --slots/--gpus`, the cores divided among their processes).",
    )
    slot_group: str | None = Field(
        None,
        description=(
            "Lock-file prefix shared by the worker processes of one device; set by "
            "`automl worker --slots` for its children."
        ),
    )
    max_body_bytes: int = Field(
        1_000_000,
        gt=0,
        description="Largest request body, in bytes: a spec (JSON or YAML), or the JSON of "
        "extend, resume, enqueue or annotate; refused while it arrives (413).",
    )
    data_root: Path = Field(
        Path("data"), description="Folder that every dataset path must resolve inside."
    )
    cache_dir: Path = Field(
        Path("automl-cache"), description="Folder of decoded images (uint8 tensors), shared."
    )
    cache_max_age_days: float = Field(
        30.0,
        gt=0,
        le=36_500,
        description="Days a file of the cache folder may go unused before a worker that "
        "writes the cache removes it (data renamed, removed or decoded at an old size).",
    )
    artifact_store: Literal["auto", "folder", "sql", "s3"] = Field(
        "auto",
        description=(
            "Where weights and checkpoints go: auto (sql with PostgreSQL, folder with SQLite), "
            "folder (AUTOML_ARTIFACTS_DIR), sql (a table in the storage database) or s3."
        ),
    )
    s3_bucket: str | None = Field(
        None, description="Bucket of the s3 artifact store (credentials as boto3 finds them)."
    )
    heartbeat_interval: float = Field(
        10.0, gt=0, le=MAX_INTERVAL_S, description="Seconds between a running trial's heartbeats."
    )
    grace_period: float = Field(
        60.0,
        gt=0,
        le=MAX_INTERVAL_S,
        description="Seconds without a heartbeat after which a trial's worker counts as lost.",
    )
    reap_interval: float = Field(
        15.0,
        gt=0,
        le=MAX_INTERVAL_S,
        description="Seconds between two passes of the reaper (API and workers).",
    )
    checkpoint_interval: float = Field(
        300.0,
        gt=0,
        le=MAX_INTERVAL_S,
        description="Seconds between checkpoints inside one long epoch (also every epoch).",
    )
    checkpoint_spacing: float = Field(
        10.0,
        ge=0,
        le=MAX_INTERVAL_S,
        description="Least seconds between two checkpoints at epoch ends (0: every epoch): "
        "short epochs do not each write the whole training state.",
    )
    db_pool_size: int = Field(
        10,
        ge=1,
        le=1000,
        description="PostgreSQL connections each process keeps open (as many more for bursts).",
    )
    api_workers: int = Field(
        1, ge=1, le=64, description="Processes of `automl serve` (uvicorn workers, one port)."
    )
    api_threads: int = Field(
        4,
        ge=1,
        le=1000,
        description="Requests each API process runs at once in its thread pool (more wait, "
        "first come first served).",
    )

    @field_validator("docs_assets_url")
    @classmethod
    def _assets_url(cls, value: str) -> str:
        """An http(s) URL or a path of this server: it goes into a page and its
        Content-Security-Policy header, where a space, quote or ';' would change them."""
        if (
            not value.lower().startswith(("https://", "http://", "/"))
            or value.startswith("//")
            or any(c.isspace() or c in "\"';,<>?#" for c in value)
        ):
            raise ValueError(
                "must be an http(s) URL or a path starting with / (no spaces, quotes, ';', "
                "',', '?' or '#')"
            )
        return value

    @model_validator(mode="after")
    def _grace_exceeds_heartbeat(self) -> Settings:
        if self.grace_period <= 2 * self.heartbeat_interval:
            raise ValueError(
                f"AUTOML_GRACE_PERIOD={self.grace_period:g}: must exceed twice "
                f"AUTOML_HEARTBEAT_INTERVAL ({self.heartbeat_interval:g} s), or live workers "
                "would be reaped"
            )
        return self

    @property
    def keys_required(self) -> bool:
        """Whether the API needs a key even while none exists: it listens on a
        non-loopback ``host`` and ``allow_anonymous`` is not set."""
        return not (self.allow_anonymous or is_loopback(self.host))


_last_settings: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def current_settings() -> Settings:
    """``Settings()``, read again only when an ``AUTOML_*`` variable changed.

    Reading the environment into ``Settings`` costs about a millisecond, and the data
    and trainer paths ask for it several times per trial.
    """
    global _last_settings
    environment = tuple(
        sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("AUTOML_"))
    )
    last = _last_settings
    if last is None or last[0] != environment:
        last = (environment, Settings())
        _last_settings = last
    return last[1].model_copy()  # a caller's change stays its own


PILLOWS_DEFAULT_PIXELS = 89_478_485
"""Pillow's ``Image.MAX_IMAGE_PIXELS``, twice which it refuses to open: pixel limits up to
this are within it without importing Pillow."""


class Limits(BaseSettings):
    """What one request may ask for. Each can be set with ``AUTOML_LIMIT_<FIELD>``; a
    request over a limit is refused (413 or 422, naming the limit) before any work."""

    model_config = SettingsConfigDict(env_prefix="AUTOML_LIMIT_", extra="ignore")

    max_trials: int = Field(
        100_000, ge=1, description="Largest `budget.n_trials`, also after extend (422)."
    )
    max_timeout_s: float = Field(
        30 * 86_400, gt=0, description="Largest `budget.timeout`, in seconds (422)."
    )
    max_params: int = Field(64, ge=1, description="Most searched params in one spec (422).")
    max_choices: int = Field(
        1_000, ge=1, description="Most choices of one categorical param (422)."
    )
    max_grid_cells: int = Field(
        100_000, ge=1, description="Largest grid a `grid` study spans, counted, not built (422)."
    )
    max_spec_depth: int = Field(
        16, ge=4, description="Deepest nesting of a spec document, JSON or YAML (422)."
    )
    max_spec_values: int = Field(
        20_000,
        ge=100,
        description="Most values in a spec document; a YAML alias counts each time it is "
        "used, so alias bombs are refused (422).",
    )
    max_string_length: int = Field(
        4_000, ge=100, description="Longest string in a spec, in characters (422)."
    )
    max_upload_bytes: int = Field(
        20 * 2**20,
        ge=1,
        description="Largest predict upload in bytes, all its images together; counted while "
        "it arrives (413).",
    )
    max_images: int = Field(64, ge=1, description="Most images one predict request sends (422).")
    max_annotate_images: int = Field(
        10_000, ge=1, description="Most images in a folder that annotate classifies (422)."
    )
    max_studies_per_project: int = Field(
        1_000,
        ge=1,
        description="Most studies one project keeps (not deleted), ended ones included (422).",
    )
    max_active_studies_per_project: int = Field(
        20, ge=1, description="Most queued or running studies of one project (422)."
    )
    max_dataset_bytes: int = Field(
        16 * 2**30,
        ge=1,
        description="Largest dataset a study may train on, decoded (images x channels x "
        "height x width bytes, every split): workers hold it in memory (422 at submit where "
        "the API sees the files; the trials fail where only workers do).",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Most pixels (width x height) of one image to predict, annotate or train "
        "on; read from its header before decoding, so decompression bombs are refused (422). "
        "No side may be over 65535 pixels either (JPEG's own limit). A bundle's `predict.py` "
        "keeps the value its bundle was built with.",
    )

    @field_validator("max_image_pixels")
    @classmethod
    def _within_pillows_limit(cls, value: int) -> int:
        if value <= PILLOWS_DEFAULT_PIXELS:  # within Pillow's own: no import of Pillow
            return value
        from PIL import Image  # here: most commands read limits and never open an image

        ceiling = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        if ceiling and value > ceiling:
            # Pillow itself refuses to open larger images before their size can be read.
            raise ValueError(f"Input should be at most {ceiling} (Pillow opens no larger image)")
        return value


VALID_HINTS = {
    "bool_parsing": "Input should be true or false (1/0, on/off, yes/no)",
}
"""What is valid, for the errors whose own message does not say (by pydantic error type)."""


def settings_error(exc: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """One line naming each setting that ``Settings`` or ``Limits`` refused, as it was set.

    Args:
        exc: The models' refusal of their values.
        flags: The command-line flag that set a field (``{"threads": "--threads"}``); a
            field not in it came from its ``AUTOML_*`` variable.

    Returns:
        Each problem as ``AUTOML_PORT=abc: Input should be a valid integer, ...``,
        ``--threads 0: Input should be ...``, or a rule between settings by its message
        alone; joined by ``; ``.
    """
    model = Limits if exc.title == Limits.__name__ else Settings
    return "; ".join(_problem(model, error, flags or {}) for error in exc.errors(include_url=False))


def _problem(model: type[BaseSettings], error: ErrorDetails, flags: Mapping[str, str]) -> str:
    message = VALID_HINTS.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a rule between settings: its message names them
        return message
    field = str(error["loc"][0])
    info = model.model_fields.get(field)
    value = "<hidden>" if info is not None and not info.repr else _quoted(error["input"])
    if field in flags:
        return f"{flags[field]} {value}: {message}"
    return f"{model.model_config['env_prefix']}{field.upper()}={value}: {message}"


def _quoted(value: object) -> str:
    """A value as the shell would take it back (``abc``, ``''``, ``'a b'``)."""
    return shlex.quote(str(value))


def limits_markdown() -> str:
    """The README's table of limits: the body size setting, then every ``Limits`` field."""
    lines = ["| variable | default | limit |", "| --- | --- | --- |"]
    body = Settings.model_fields["max_body_bytes"]
    rows = [("AUTOML_MAX_BODY_BYTES", body.default, f"{body.description}")]
    rows += [
        (f"AUTOML_LIMIT_{name.upper()}", field.default, field.description)
        for name, field in Limits.model_fields.items()
    ]
    for variable, default, description in rows:
        lines.append(f"| `{variable}` | `{_shown(default)}` | {description} |")
    return "\n".join(lines) + "\n"


def _shown(value: object) -> str:
    """A default as users write it: ``2592000``, not ``2592000.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


TRUE_WORDS = ("1", "true", "on", "yes")
FALSE_WORDS = ("0", "false", "off", "no")


def env_flag(name: str, default: bool) -> bool:
    """A yes/no environment variable: unset or empty gives ``default``.

    Raises:
        ValueError: If it is set to anything but 1/0, true/false, on/off or yes/no.
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(f"{name} must be 1 or 0 (true/false, on/off, yes/no), not {value!r}")


def unusable_folder(what: str, directory: object, variable: str, reason: str) -> str:
    """The one line that refuses a configured folder automl cannot create or write in.

    Args:
        what: The folder's role, e.g. ``artifacts folder``.
        directory: The folder.
        variable: The setting that put it there, e.g. ``AUTOML_ARTIFACTS_DIR``.
        reason: Why not, e.g. ``Permission denied``.
    """
    return (
        f"cannot use the {what} {str(directory)!r} ({variable}): {reason}; "
        f"set {variable} to a folder automl can create and write in"
    )
