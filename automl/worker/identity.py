"""Who a worker is, and which sampler and training seeds each of its trials gets.

Process ids repeat across machines and containers (every Docker replica is PID 1), so a
worker's id ends with random bits, and seeds come from the ticket (unique in the study),
never from the process: two workers never propose the same configuration because they
were started the same way, and a trial trains the same wherever it runs.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket

SEED_MODULUS = 2**31


def new_worker_id() -> str:
    """``host:pid:random``, unique even among containers that all run as PID 1."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def sampler_seed(study_seed: int, ticket_id: int, attempt: int, shared: bool) -> int:
    """The sampler seed for one attempt of one ticket.

    Args:
        study_seed: The study's seed (the spec's, or drawn at submit).
        ticket_id: The ticket.
        attempt: Which attempt at it.
        shared: The sampler needs the same seed in every worker (QMC scrambling).
    """
    if shared:
        return study_seed % SEED_MODULUS
    digest = hashlib.sha256(f"{study_seed}:{ticket_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % SEED_MODULUS


def training_seed(study_seed: int, ticket_id: int) -> int:
    """The training seed of a ticket whose spec neither fixes nor searches ``seed``.

    Every trial then trains with its own noise (initialization, batch order,
    augmentation), as independent runs would, and the study's best is not the best of one
    seed's luck; the seed depends on the ticket alone, so a retried or resumed attempt
    trains exactly as the first did.

    Args:
        study_seed: The study's seed (the spec's, or drawn at submit).
        ticket_id: The ticket.
    """
    digest = hashlib.sha256(f"training:{study_seed}:{ticket_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % SEED_MODULUS
