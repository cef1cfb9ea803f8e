"""Service settings, read from ``AUTOML_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STORAGE = "sqlite:///automl.db"


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
    poll_interval: float = Field(2.0, gt=0, description="Seconds an idle worker sleeps.")
    device: str = Field("auto", description="Device for workers: auto, cpu, cuda or cuda:N.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads per worker process (default: PyTorch's)."
    )
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest accepted spec body.")
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
        10.0, gt=0, description="Seconds between a running trial's heartbeats."
    )
    grace_period: float = Field(
        60.0,
        gt=0,
        description="Seconds without a heartbeat after which a trial's worker counts as lost.",
    )
    reap_interval: float = Field(
        15.0, gt=0, description="Seconds between two passes of the reaper (API and workers)."
    )
    checkpoint_interval: float = Field(
        300.0,
        gt=0,
        description="Seconds between checkpoints inside one long epoch (also every epoch).",
    )

    @model_validator(mode="after")
    def _grace_exceeds_heartbeat(self) -> Settings:
        if self.grace_period <= 2 * self.heartbeat_interval:
            raise ValueError(
                f"grace_period ({self.grace_period:g} s) must exceed twice heartbeat_interval "
                f"({self.heartbeat_interval:g} s), or live workers would be reaped"
            )
        return self


def get_settings() -> Settings:
    """Returns settings read from the environment now."""
    return Settings()
