"""The claim reads the next pending ticket in index order; every test runs on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from automl.spec import StudySpec
from automl.store import Store, claim, submit_study, tables
from automl.store.leases import next_pending_ticket

PENDING_PER_STUDY = 1500


def _plan(store: Store, query: sa.Select[tuple[int]]) -> str:
    """The database's plan for ``query`` (its parameters inlined), one line per step."""
    with store.write() as connection:
        sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        explain = "EXPLAIN " if store.backend == "postgresql" else "EXPLAIN QUERY PLAN "
        return "\n".join(str(row[-1]) for row in connection.exec_driver_sql(explain + sql))


def _fill(store: Store, study_ids: list[int]) -> None:
    """Thousands of tickets per study: half pending (three priorities), half done."""
    rows = [
        {
            "study_id": study_id,
            "source": "sampler",
            "state": "pending" if i % 2 else "done",
            "outcome": None if i % 2 else "complete",
            "priority": i % 3,
            "created_at": 0.0,
        }
        for study_id in study_ids
        for i in range(2 * PENDING_PER_STUDY)
    ]
    with store.write() as connection:
        connection.execute(tables.tickets.insert(), rows)
    with store.write() as connection:
        connection.exec_driver_sql("ANALYZE")


def test_the_claim_reads_the_next_pending_ticket_without_sorting(store: Store) -> None:
    _fill(store, [1, 2, 3])

    plan = _plan(store, next_pending_ticket(2))

    assert "ix_automl_tickets_claim" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


def test_the_counts_and_checks_keep_the_study_state_index(sqlite_store: Store) -> None:
    """What ``ix_automl_tickets_study_state`` served before the claim had an index of its
    own still reads it (the counts from the index alone). SQLite only: its planner is
    deterministic, PostgreSQL's may rightly prefer a scan of a table this small."""
    store = sqlite_store
    _fill(store, [1, 2, 3])
    tickets = tables.tickets

    counts = _plan(
        store,
        sa.select(tickets.c.study_id, tickets.c.state, tickets.c.outcome, sa.func.count())
        .where(tickets.c.study_id.in_([1, 2]))
        .group_by(tickets.c.study_id, tickets.c.state, tickets.c.outcome),
    )
    results = _plan(
        store,
        sa.select(
            sa.exists().where(
                tickets.c.study_id == 2,
                tickets.c.state == "done",
                tickets.c.outcome.in_(["complete", "pruned"]),
            )
        ),
    )

    assert "COVERING INDEX ix_automl_tickets_study_state" in counts, counts
    assert "ix_automl_tickets_study_state (study_id=? AND state=? AND outcome=?)" in results


def test_the_claim_hands_out_the_highest_priority_then_the_oldest(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 1})).id
    with store.write() as connection:
        connection.execute(
            tables.tickets.insert(),
            [
                {"study_id": study_id, "source": "enqueued", "state": "pending", "priority": p}
                | {"created_at": 0.0}
                for p in (0, 2, 1, 2)
            ],
        )
        ids = connection.scalars(
            sa.select(tables.tickets.c.ticket_id).order_by(tables.tickets.c.ticket_id)
        ).all()

    handed_out = [claim(store, "w", study_id).ticket_id for _ in ids]  # type: ignore[union-attr]

    assert handed_out == [ids[1], ids[3], ids[2], ids[0]]
