"""Service settings, read from ``AUTOML_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    data_root: Path = Field(
        Path("data"), description="Folder that every dataset path must resolve inside."
    )
    cache_dir: Path = Field(
        Path("automl-cache"), description="Folder of decoded images (uint8 tensors), shared."
    )


def get_settings() -> Settings:
    """Returns settings read from the environment now."""
    return Settings()
