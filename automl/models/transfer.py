"""Transfer learning: load pretrained weights safely, adapt them, freeze, and group params.

Checkpoints come from a file under the data root (``AUTOML_DATA_ROOT``) or by name from
the torch hub cache (``$TORCH_HOME/hub/checkpoints``), and are read with safetensors or
``torch.load(weights_only=True)`` only: never arbitrary pickles.

Models follow the convention of ``models/base.py``: ``nn.Sequential(backbone, head)``. The
*head* ends in the model's last ``nn.Linear``; the backbone's *stages* (for ``first_k``
freezing) are ``models.base.backbone_stages``. A checkpoint saved from one of our models
matches its keys directly; a torchvision checkpoint (``conv1.weight``, ``layer1...``)
matches the backbone, ``model[0]``.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import AfterValidator, Field, ValidationInfo
from torch import nn

from automl.data.errors import DatasetError
from automl.data.paths import confine, data_root, relative_name
from automl.models.base import backbone_stages, head_keys
from automl.registry import RECORDED, AppliesWhen, EntryOptions, within_strict_input
from automl.wording import clipped

FreezeMode = Literal["none", "backbone", "first_k"]
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
TORCH_FILE_MAGIC = (b"PK\x03\x04", b"\x80")
"""How ``torch.save`` files start: a zip archive, or (before torch 1.6) a bare pickle."""
REPORTED_SKIPS = 3
"""Skipped keys a load summary names before it only counts them."""

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint cannot be found or read; the message names it."""


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where torch hub keeps downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_checkpoint(reference: str) -> Path:
    """Finds a checkpoint: a path under the data root, or a file name in the hub cache.

    A reference with a ``/`` is a path relative to the data root (confined to it); a bare
    name is looked up first under the data root, then in ``hub_checkpoint_dir()``.

    Raises:
        CheckpointError: If it escapes the data root, is not a known checkpoint type, or
            is not found.
    """
    if "://" in reference:  # workers fetch no URL a spec names (nor a server's, on its behalf)
        raise CheckpointError(
            f"checkpoint {reference!r} is a URL; automl downloads no checkpoint: save the file "
            "under the data root, or in the torch hub cache ($TORCH_HOME/hub/checkpoints), "
            "and name it"
        )
    if not reference.endswith(CHECKPOINT_SUFFIXES):
        raise CheckpointError(
            f"checkpoint {reference!r} must be a file ending in "
            f"{', '.join(CHECKPOINT_SUFFIXES)} (under the data root, or in the torch hub cache)"
        )
    root = data_root()
    try:
        local = confine(reference, root)
    except DatasetError as exc:
        raise CheckpointError(str(exc)) from None
    if local.is_file():
        return local
    _refuse_other_kinds(local, relative_name(local, root))
    if "/" not in reference and "\\" not in reference:
        cached = hub_checkpoint_dir() / reference
        if cached.is_file():
            return cached
        _refuse_other_kinds(cached, reference)
        raise CheckpointError(
            f"checkpoint {reference!r} not found under the data root or in the torch hub "
            "cache ($TORCH_HOME/hub/checkpoints)"
        )
    raise CheckpointError(
        f"checkpoint {relative_name(local, root)!r} not found under the data root"
    )


def _refuse_other_kinds(path: Path, shown: str) -> None:
    """Names what a checkpoint path that exists but is no regular file is (a folder, a
    named pipe...), rather than calling it missing; none is opened (a pipe would block).

    Raises:
        CheckpointError: If ``path`` exists and is not a regular file.
    """
    try:
        kind = "a folder" if path.is_dir() else "not a regular file" if path.exists() else None
    except OSError:
        kind = None  # unreadable: "not found" is the most that can be said
    if kind is not None:
        raise CheckpointError(f"checkpoint {shown!r} is {kind}: name a checkpoint file")


def check_pretrained(reference: str) -> str:
    """Returns ``reference`` if it names a readable checkpoint (for an options validator,
    so a missing, empty or garbled file, or a whole pickled model, is a 422 at submit time,
    not a failure of every trial). At submit (``strict_input``) a torch file is loaded as a
    trial would (a zip archive's tensors mapped, not read; a legacy pickle read whole), else
    only the start of the file is read; of a safetensors file, its header. Whether its
    weights fit the model is known only when a trial builds it.

    Raises:
        CheckpointError: If it does not.
    """
    path = resolve_checkpoint(reference)
    try:
        with path.open("rb") as file:
            start = file.read(9)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path.name!r}: {exc}") from None
    if not start:
        raise CheckpointError(f"checkpoint {path.name!r} is empty (0 bytes)")
    why = _wrong_format(path)
    if why is None and path.suffix != ".safetensors" and not _torch_file(path):
        why = "not a torch file (torch.save writes a zip archive or a pickle)"
    if why is None and path.suffix == ".safetensors":
        why = _safetensors_problem(path)
    if why is None and path.suffix != ".safetensors" and within_strict_input():
        why = _torch_load_problem(path)  # at submit: a trial's own load says it again
    if why is not None:
        raise CheckpointError(f"cannot read checkpoint {path.name!r}: {why}")
    return reference


def _checked_unless_recorded(reference: str | None, info: ValidationInfo) -> str | None:
    """``check_pretrained`` of a reference, except in a configuration read back from a
    trial (``RECORDED``): serving and describing its model need the weights it saved, not
    the checkpoint it started from, which may have been moved since."""
    if reference and not (info.context or {}).get(RECORDED):
        check_pretrained(reference)
    return reference


LEGACY_TORCH_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
"""The pickled magic number a ``torch.save`` file of the format before torch 1.6 starts
with, after the pickle's protocol (2 to 5; 4 and 5 put a frame header in between)."""


def _torch_file(path: Path) -> bool:
    """Whether ``path`` reads as a ``torch.save`` file from its ends: a whole zip archive
    (its central directory, at the end, is found) or the legacy format's magic number."""
    with path.open("rb") as file:
        start = file.read(32)
    if len(start) > 2 and start[0] == 0x80 and 2 <= start[1] <= 5:
        return LEGACY_TORCH_MAGIC in start
    return zipfile.is_zipfile(path)


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's header (None: it lists tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as tensors:
            names = list(tensors.keys())
    except Exception as exc:  # safetensors raises its own errors, with no common base
        return str(exc)
    return None if names else "it holds no tensors"


def _torch_load_problem(path: Path) -> str | None:
    """Why ``torch.load(weights_only=True)`` refuses a torch file (None: it reads); a zip
    archive's tensors are mapped, not read."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # pickle and zip errors have no common base
        return _unpickling_problem(exc)
    return None


_TERMINAL_STYLES = re.compile(r"\x1b\[[0-9;]*m")
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error: ([^\n]*)")

# torch.load warns of a legacy pickle's protocol (2 to 5 all load): noise at every submit
# and trial. A filter set once, as ``warnings.catch_warnings`` is not thread-safe.
warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)


def _unpickling_problem(exc: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed: torch's own message runs
    to many lines (with terminal styles) about options this service never takes."""
    message = _TERMINAL_STYLES.sub("", str(exc))
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in message:
        found = _REFUSED_GLOBAL.search(message)
        if found:
            return (
                f"it holds pickled Python objects ({found.group(1)}), not only tensors (a "
                "whole model saved with torch.save(model)?), which are never unpickled "
                "here: save model.state_dict() instead, or convert it to safetensors"
            )
        reason = _UNPICKLER_ERROR.search(message)
        detail = reason.group(1).strip() if reason else "its pickle cannot be read safely"
        return f"{detail} (the file may be damaged)"
    return clipped(message.strip().splitlines()[0]) if message.strip() else type(exc).__name__


def load_checkpoint(reference: str | Path) -> dict[str, torch.Tensor]:
    """Reads a state dict with safetensors or ``torch.load(weights_only=True)``.

    A checkpoint that wraps its weights (``{"state_dict": ...}`` or ``{"model": ...}``)
    is unwrapped, and a ``module.`` prefix (from DataParallel) is stripped.

    Args:
        reference: A ``Path`` is used as is; a string goes through ``resolve_checkpoint``.

    Raises:
        CheckpointError: If it cannot be found or read, or holds no tensors.
    """
    path = reference if isinstance(reference, Path) else resolve_checkpoint(reference)
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path.name!r}: {exc}") from None
    if empty:
        raise CheckpointError(f"checkpoint {path.name!r} is empty (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors have no common base
        why = _wrong_format(path) or _unpickling_problem(exc)
        raise CheckpointError(f"cannot read checkpoint {path.name!r}: {why}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    tensors = (
        {
            str(k).removeprefix("module."): v
            for k, v in dict(state).items()
            if isinstance(v, torch.Tensor)
        }
        if isinstance(state, Mapping)
        else {}
    )
    if not tensors:
        raise CheckpointError(f"checkpoint {path.name!r} holds no tensors")
    return tensors


def _wrong_format(path: Path) -> str | None:
    """Why an unreadable checkpoint is in another format than its suffix says, if it is.

    A safetensors file starts with an 8-byte header length, then the JSON header's ``{``.
    """
    try:
        with path.open("rb") as file:
            start = file.read(9)
    except OSError:
        return None
    safetensors = len(start) == 9 and start[8:9] == b"{"
    if path.suffix == ".safetensors" and not safetensors:
        if start.startswith(TORCH_FILE_MAGIC):
            return "not a safetensors file (saved with torch.save? name it .pt or .bin)"
        return "not a safetensors file"
    if path.suffix != ".safetensors" and safetensors:
        return "not a torch file, it looks like a safetensors file: name it .safetensors"
    return None


@dataclass
class LoadReport:
    """What ``load_pretrained`` did with each weight of the model.

    ``loaded``, ``adapted`` and ``skipped`` cover the backbone's tensors; 0-dim buffers
    (batch norm's ``num_batches_tracked``) are copied when they match but not reported.
    """

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    """Conv weights whose input channels were converted (3 to 1, or 1 to 3)."""
    skipped: list[str] = field(default_factory=list)
    """Backbone keys kept at their initialization (missing from the checkpoint or another
    shape)."""
    head: list[str] = field(default_factory=list)
    """The head's keys: always kept new, whatever the checkpoint holds."""
    source: str = ""
    """The checkpoint, as the options named it ("" when unknown)."""

    def summary(self) -> str:
        """One line for the trial's notes, e.g. ``loaded 10 of 15 backbone tensors from
        x.safetensors (skipped: 0.2.0.weight, ...)``."""
        matched = len(self.loaded) + len(self.adapted)
        total = matched + len(self.skipped)
        details = []
        if self.adapted:
            details.append(f"{len(self.adapted)} with its input channels adapted")
        if self.skipped:
            named = ", ".join(self.skipped[:REPORTED_SKIPS])
            more = len(self.skipped) - REPORTED_SKIPS
            details.append(f"skipped: {named}" + (f" and {more} more" if more > 0 else ""))
        line = (
            f"loaded {matched} of {total} backbone tensors from {self.source or 'the checkpoint'}"
        )
        return f"{line} ({'; '.join(details)})" if details else line


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Converts a conv weight ``(out, in, kh, kw)`` to ``channels`` input channels.

    RGB to grayscale sums the three filters (a gray image equals R = G = B, so the
    response is unchanged); grayscale to RGB repeats the filter divided by three.

    Raises:
        ValueError: For any other conversion.
    """
    current = weight.shape[1]
    if current == channels:
        return weight
    if current == 3 and channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if current == 1 and channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3.0
    raise ValueError(f"cannot adapt a conv weight from {current} to {channels} input channels")


def load_pretrained(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = ""
) -> LoadReport:
    """Copies matching pretrained weights into ``model``'s backbone, adapting the first
    conv's channels.

    Keys whose shapes match are copied; a 4-d weight that differs only in input channels
    (1 vs 3) is adapted; everything else keeps its fresh initialization, and so does the
    head (``model[1]``), even where its shape matches: it is trained for the task's
    classes. Keys of a bare backbone (a torchvision checkpoint) are matched against
    ``model[0]``.

    Args:
        model: A model of the convention ``nn.Sequential(backbone, head)``.
        state: The checkpoint's tensors.
        source: The checkpoint's name, for the report and errors.

    Returns:
        Which backbone keys were loaded, adapted or skipped.

    Raises:
        CheckpointError: If no backbone weight matches (a checkpoint of another
            architecture or width would otherwise train from scratch without a word).
        ValueError: If ``model`` does not follow the convention.
    """
    own = model.state_dict()
    head = set(head_keys(model))
    if not own.keys() & state.keys() and {f"0.{key}" for key in state} & own.keys():
        state = {f"0.{key}": value for key, value in state.items()}  # a bare backbone's keys
    report = LoadReport(head=[key for key in own if key in head], source=source)
    merged = dict(own)
    for key, target in own.items():
        if key in head:
            continue
        pretrained = state.get(key)
        if target.dim() == 0:  # a counter (num_batches_tracked): it says nothing of a match
            if pretrained is not None and pretrained.shape == target.shape:
                merged[key] = pretrained.to(target.dtype)
        elif pretrained is None:
            report.skipped.append(key)
        elif pretrained.shape == target.shape:
            merged[key] = pretrained.to(target.dtype)
            report.loaded.append(key)
        elif (
            pretrained.dim() == 4
            and pretrained.shape[0] == target.shape[0]
            and pretrained.shape[2:] == target.shape[2:]
            and {pretrained.shape[1], target.shape[1]} == {1, 3}
        ):
            merged[key] = adapt_input_channels(pretrained, target.shape[1]).to(target.dtype)
            report.adapted.append(key)
        else:
            report.skipped.append(key)
    if not report.loaded and not report.adapted:
        raise CheckpointError(_matches_nothing(own, state, report))
    model.load_state_dict(merged)
    return report


def _matches_nothing(
    own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], report: LoadReport
) -> str:
    """Why a checkpoint loads into none of the backbone: both key sets, and the first key
    both have, with its two shapes."""
    theirs = ", ".join(sorted(state)[:3]) or "none"
    ours = ", ".join(report.skipped[:3])
    named = f" {report.source!r}" if report.source else ""
    message = (
        f"the pretrained checkpoint{named} matches none of the model's "
        f"{len(report.skipped)} backbone weights by name and shape (its keys: {theirs}...; "
        f"the model's: {ours}..."
    )
    shared = next((key for key in report.skipped if key in state), None)
    if shared is not None:
        there, here = tuple(state[shared].shape), tuple(own[shared].shape)
        message += f"; {shared} is {there} there, {here} here"
    return message + "): was it saved from this architecture, with the same options?"


def find_head(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """The last ``nn.Linear`` in ``model``: ``(parent, attribute name, layer)``.

    Raises:
        ValueError: If the model has no linear layer.
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head")
    name, layer = last
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attribute, layer


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Replaces the last ``nn.Linear`` with a fresh one for ``num_classes`` outputs.

    Returns:
        The new head.
    """
    parent, attribute, old = find_head(model)
    head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    head = head.to(device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, attribute, head)
    return head


def freeze(model: nn.Module, mode: FreezeMode, k: int = 0) -> list[str]:
    """Stops gradients to part of the backbone.

    Args:
        model: The network.
        mode: ``none`` trains everything; ``backbone`` trains only the head;
            ``first_k`` freezes the first ``k`` stages of ``backbone_stages``.
        k: Stages frozen by ``first_k`` (at most the number of stages).

    Returns:
        Names of the frozen parameters. (Batch-norm running statistics of frozen stages
        still update in train mode, unless the training loop keeps those layers in
        inference mode: ``freeze_bn_stats``.)

    Raises:
        ValueError: For an unknown mode or a ``k`` outside ``[0, number of stages]``.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if mode == "none":
        return []
    stages = backbone_stages(model)
    if mode == "backbone":
        _, _, head = find_head(model)
        head_ids = {id(p) for p in head.parameters()}
        frozen = [p for p in model.parameters() if id(p) not in head_ids]
    elif mode == "first_k":
        if not 0 <= k <= len(stages):
            raise ValueError(f"k must be in [0, {len(stages)}] for this model, got {k}")
        frozen = [p for stage in stages[:k] for p in stage.parameters()]
    else:
        raise ValueError(f"unknown freeze mode {mode!r}; valid choices: none, backbone, first_k")
    frozen_ids = {id(p) for p in frozen}
    for parameter in frozen:
        parameter.requires_grad_(False)
    return [name for name, p in model.named_parameters() if id(p) in frozen_ids]


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr_mult``.

    Frozen parameters are left out; an empty group is dropped.
    """
    _, _, head = find_head(model)
    head_ids = {id(p) for p in head.parameters()}
    head_params = [p for p in head.parameters() if p.requires_grad]
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [
        {"params": backbone, "lr": lr * backbone_lr_mult, "name": "backbone"},
        {"params": head_params, "lr": lr, "name": "head"},
    ]
    return [group for group in groups if group["params"]]


class TransferOptions(EntryOptions):
    """Options of architectures that can start from pretrained weights."""

    APPLIES_WHEN: ClassVar[Mapping[str, AppliesWhen]] = {
        "freeze_k": AppliesWhen("freeze", ("first_k",)),
        # freeze: backbone leaves no backbone parameter to train at any rate.
        "backbone_lr_mult": AppliesWhen("freeze", ("none", "first_k")),
        "freeze_bn_stats": AppliesWhen("freeze", ("backbone", "first_k")),
    }

    pretrained: Annotated[str | None, AfterValidator(_checked_unless_recorded)] = Field(
        None,
        description="Checkpoint under the data root, or a file name in the torch hub "
        "cache; safetensors or a weights-only torch file.",
    )
    freeze: FreezeMode = Field(
        "none", description="Train everything, only the head, or not the first k stages."
    )
    freeze_k: int = Field(
        1,
        ge=0,
        le=32,  # every model's stages (mobilenet_v3_large: 18)
        description="Stages frozen by freeze: first_k (all of them where the model has fewer).",
    )
    backbone_lr_mult: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Backbone learning rate as a multiple of lr; not with freeze: backbone.",
    )
    freeze_bn_stats: bool = Field(
        False,
        description="With freeze: keep the batch-norm layers of frozen stages in inference "
        "mode, normalizing with the statistics the checkpoint brought, which never change "
        "(as Keras does with frozen layers); false lets those statistics follow the "
        "training data.",
    )


def frozen_batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers whose scale and shift ``freeze`` froze: those that
    ``freeze_bn_stats`` keeps in inference mode while the rest trains."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.affine
        and not any(parameter.requires_grad for parameter in module.parameters())
    ]


def apply_transfer(model: nn.Module, options: TransferOptions) -> dict[str, str]:
    """Loads ``options.pretrained`` into ``model`` (the head stays new, a grayscale input
    gets summed RGB filters) and freezes what ``options.freeze`` says. A ``freeze_k`` above
    the model's stages (``depth`` searched beside it) freezes them all.

    Returns:
        Notes for the trial: ``pretrained`` (what the load did), ``freeze_k`` (where it
        froze fewer stages than asked) and ``freeze`` (frozen without pretrained weights),
        each only where it applies.

    Raises:
        CheckpointError: If the checkpoint cannot be read or fits none of the backbone.
    """
    notes = {}
    if options.pretrained:
        state = load_checkpoint(options.pretrained)
        report = load_pretrained(model, state, source=options.pretrained)
        logger.info("pretrained: %s", report.summary())
        notes["pretrained"] = report.summary()
    k = options.freeze_k
    if options.freeze == "first_k":
        stages = len(backbone_stages(model))
        if k > stages:
            notes["freeze_k"] = f"{k} is more than the model's {stages} stages: froze all {stages}"
            k = stages
    if options.freeze != "none" and not options.pretrained:
        notes["freeze"] = (
            f"freeze: {options.freeze} without pretrained weights: the frozen stages keep "
            "their random initial weights"
        )
    freeze(model, options.freeze, k)
    return notes
