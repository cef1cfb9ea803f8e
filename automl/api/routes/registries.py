"""What studies can name: every registry with its entries and their options."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from automl.api.errors import error_responses
from automl.catalog import REGISTRIES, catalog, describe_registry

router = APIRouter(prefix="/registries", tags=["registries"])


class OptionPublic(BaseModel):
    """One option (hyperparameter) of an entry."""

    name: str
    type: str = Field(description="int, float, bool, str, categorical or any.")
    default: Any = None
    choices: list[Any] | None = None
    range: dict[str, float] = Field(default_factory=dict, description="ge/gt/le/lt bounds.")
    description: str = ""
    required: bool = False
    applies_when: dict[str, str] | None = Field(
        None, description="The choice under which the option applies, e.g. {model: cnn}."
    )
    spec_name: str | None = Field(None, description="The name a spec uses, when qualified.")


class EntryPublic(BaseModel):
    """One registered entry."""

    name: str
    description: str
    source: str = Field(description="'automl', or the plugin package that registered it.")
    options: list[OptionPublic]
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="A metric's better way (metrics only)."
    )
    bounds: list[float | None] | None = Field(
        None,
        description="The values a metric can take, low and high (null: unbounded); metrics only.",
    )


class RegistriesPublic(BaseModel):
    """Every registry, the general training hyperparameters, and plugins that failed."""

    hyperparameters: list[OptionPublic]
    registries: dict[str, list[EntryPublic]]
    plugin_errors: dict[str, dict[str, str]]


@router.get("", response_model=RegistriesPublic)
def read_registries() -> dict[str, Any]:
    """Every registry with each entry's description and options."""
    return catalog()


@router.get("/{kind}", response_model=list[EntryPublic], responses=error_responses(404))
def read_registry(kind: str) -> list[dict[str, Any]]:
    """One registry (``models``, ``optimizers``, ``augmentations``...)."""
    if kind not in REGISTRIES:
        raise HTTPException(404, f"no registry {kind!r}; registries: {', '.join(REGISTRIES)}")
    return describe_registry(kind)
