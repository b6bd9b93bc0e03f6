"""Expectations: deciding, from audit events, whether the system did what a scenario expects after
one injection. Pure logic, no Kafka: the stream worker (``agent.worker``) feeds it.

A *watch* (``agent.expectations.watch.Watch``) follows one expectation after one injection. Audit
events are offered to it (``observe``); it answers with a verdict as soon as one is certain
(``decide``). Each kind is one module with a ``Kind`` registered in ``KINDS``:

=================  ===================================  ============================================
kind               decided early                        decided at deadline + grace
=================  ===================================  ============================================
appears            PASSED on a match by the deadline    FAILED (with the late match, if any)
time_to_recover    PASSED on a match by ``max``         FAILED, with the time it took if it came
absent             FAILED on a match by the deadline    PASSED
count              FAILED once ``max`` is exceeded      PASSED when ``min`` is reached, else FAILED
order              PASSED when the sequence completes   FAILED with how far the sequence got
stable             FAILED when it goes down too soon;   FAILED: it never came up
                   PASSED once it stayed up long enough
reaction           PASSED when the service says         INCONCLUSIVE: nothing reacted
                   anything (the worker's own)
metric             recovers: PASSED on the first        recovers: FAILED; holds: PASSED; no
                   accepted sample; holds: FAILED on    sample at all: INCONCLUSIVE
                   the first refused one (the agent
                   samples a Prometheus query)
=================  ===================================  ============================================

Everything is judged on event time (the audit event's own timestamp); the grace period waits,
in processing time, for late events. A verdict that needs the audit trail to have been alive
through the deadline (every verdict decided at the deadline) is INCONCLUSIVE instead when no
audit event at or after the deadline has been seen at all: silence proves nothing.

Attribution: ``correlation-id`` counts events that carry the injection's id; ``target-window``
counts events from the expectation's service (or the fault's target service) stamped inside the
window [injection, deadline + grace]; ``window`` counts events from any service (or the
expectation's service) inside that window; ``any`` counts what ``correlation-id`` or
``target-window`` counts. Overlapping faults on one target share its events under
``target-window``: each watch counts them (see docs/correlation.md).

Identity: audit trails are at least once, so one event may arrive twice. An event that carries an
identity (its CloudEvents ``source`` and ``id``: see ``agent.worker.judge.row_from``) counts once per
watch, whatever the expectation kind: each watch keeps the identities it has counted (the last
``MAX_COUNTED_IDS``) and ignores repeats. Events without an id are counted as they come.

Sequencing (``onlyAfter``): a watch may count only what comes after the event another expectation
of the same injection waits for (its type and match, from the same service): "risk reports resume"
only after "ready again", so that a report the stopping process sent is not taken for recovery when
events carry no incarnation. Matching events before that event are held (the last ``MAX_HELD``),
counted if an earlier gate event turns up, and named in a verdict that does not pass. When the gate
event never came, an expectation of presence FAILS (nothing came after it) and one of absence is
INCONCLUSIVE (there was nothing after it to judge).

Silent targets: a watch that names a service notes whether that service sent any audit event at
all since the injection (``hear``). An expectation of presence (a kind's ``expects_presence``) that
is not met is INCONCLUSIVE when the service was silent ("no audit event from X since the
injection"), and FAILED, saying the service did send other events, when it was not.

Adding a kind: a module with a ``Kind`` subclass (its ``name``; its ``rule``, the pydantic model of
what a scenario writes under the key ``name``; ``early``, ``at_deadline``, ``expected`` and whatever
else it does differently from ``Kind``'s defaults, ``check`` for what it needs of the shared fields),
registered with ``register`` (imported below, or from an embedding). Then scenarios can write it
(``scenario_model()`` adds its key), the chaos event carries it by name (``kind_name``, its rule's
fields in ``rule``, given to the watch as ``Watch.params``) and the worker judges it. A worker that
does not know a kind logs it and makes no watch of it: upgrade workers before agents.
tests/unit/worker/test_expectation_kinds.py adds a toy kind, written in a scenario and judged.
"""

# in the order the scenario language lists them (registration order)
from agent.expectations import appears, absent, count, order, time_to_recover, stable, reaction, metric  # noqa: I001
from agent.expectations.base import FAILED, INCONCLUSIVE, PASSED, AuditObservation, Verdict
from agent.expectations.watch import (
    KINDS,
    MAX_COUNTED_IDS,
    MAX_HELD,
    Kind,
    Watch,
    generation,
    register,
    unregister,
    written,
)

__all__ = ["FAILED", "INCONCLUSIVE", "KINDS", "MAX_COUNTED_IDS", "MAX_HELD", "PASSED", "AuditObservation", "Kind",
           "Verdict", "Watch", "absent", "appears", "count", "generation", "metric", "order", "reaction", "register",
           "stable", "time_to_recover", "unregister", "written"]
