"""The rules engine: evaluates validated patient facts with the compiled rulebook on durable-rules.

This is the only module that imports ``durable`` (engineering/durable-rules.md explains every precaution below).
It drives durable-rules' C entry points directly instead of through ``durable.engine.Host``:

- **No dispatcher threads.** ``Host`` starts self-re-arming timer threads that run actions concurrently with the
  caller (error 307, segfaults). Without a ``Host`` there are none; every action runs in the caller's thread,
  synchronously, inside ``evaluate``. (``durable.lang`` is never imported: it registers into a global host.)
- **One live session per engine, a fresh session id per evaluation, ``delete_state`` in ``finally``.** Sessions
  are looked up by a 32-bit hash of their id, so two live sessions could share state and one patient's facts
  join another's. A lock makes evaluations on one engine strictly sequential, so at most one session exists.
  (Keeping the session and retracting the patient's facts instead would save ~30 µs of creation, but durable-rules'
  retraction reads uninitialised memory, under valgrind, through the frames of completed actions: never retract.)
- **Every evaluation starts an action** (the compiler guarantees a rule matching every patient), and all pending
  actions are drained before ``delete_state``, also after an error: deleting a session in which no action started
  can segfault.
- **Facts only** (``assert_fact``; events would be consumed by the first rule), never an empty batch call.
- **Actions are ours and fail closed.** durable swallows exceptions raised in actions into the session state; here
  an action is a few lines of this module, any error is recorded, the session drained and deleted, and the
  evaluation raises ``EngineError``. No partial result ever leaves this module.
- **A loop guard** bounds the number of firings per evaluation.
- **Derived facts are asserted once each** (asserting an identical fact twice raises inside the action and
  silently skips the rest of it).
- **A stratum's marker says which settled derived facts hold** (compiler.py): one holds when a rule deriving it has
  fired in this evaluation, read from this session's own firings once everything below the stratum has run.

Above the engine, ``Engine`` is the public entry point: validate, run, build the assessment.
"""

from __future__ import annotations

import itertools
import platform
import threading
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import durable_rules_engine as _dre

from .assessment import Assessment, Firing, OutputTemplates, build_assessment
from .compiler import STRATUM, Program, compile_probe, compile_rulebook
from .conditions import Atom
from .errors import EngineError, InvalidSettingError
from .fact_fields import leaf_values
from .facts import PatientFacts
from .memo import CacheStats, MemoCache
from .rule_loader import load_rulebook
from .rulebook import Rulebook
from .validation import input_sha256, parse_facts, render_leaves

__all__ = ["DEFAULT_MAX_FIRINGS", "AuditSink", "Engine", "default_engine", "evaluate"]

DEFAULT_MAX_FIRINGS = 10_000
_NOT_HANDLED = 1  # assert_fact result: no rule matched the fact (it is not stored); not an error for us


class _DurableRuleset:
    """A compiled program loaded into durable-rules, run one patient session at a time."""

    def __init__(self, program: Program, max_firings: int):
        self._program = program
        self._max_firings = max_firings
        self._lock = threading.Lock()
        self._session_ids = itertools.count(1)
        # What each engine rule's action does, flattened for the hot loop: (facts to assert, keep the message?)
        self._actions = {
            name: (rule.asserts, rule.suppression is not None) for name, rule in program.rules.items()
        }
        # Marker k: its head (a "%s" for the session id) and, for each settled derived fact it reports, the field
        # written when the fact holds and when it does not (compiler.py: the rules of stratum k test these fields).
        self._markers = tuple(
            ('{"sid":"%s","t":"' + STRATUM + f'","n":{k}',
             tuple((name, f',"{name}":true', f',"{name}":false') for name in names))
            for k, names in enumerate(program.marker_facts, 1)
        )
        self._derives = {name: rule.derives for name, rule in program.rules.items() if rule.derives is not None}
        try:
            self._handle = _dre.create_ruleset(program.rulebook.name, program.ruleset_json())
        except _dre.error as exc:
            raise EngineError(f"durable-rules rejected the compiled rulebook: {exc}") from exc
        # Free the C ruleset when this object goes away (there are at most 131072 handles per process).
        self._finalizer = weakref.finalize(self, _dre.delete_ruleset, self._handle)

    def run(self, facts: PatientFacts, values: tuple[Any, ...] | None = None,
            leaves: list[str] | None = None) -> list[Firing]:
        """Evaluate one patient in a fresh session; return the firings in order (rule name, message or None)."""
        if values is None:
            values = leaf_values(facts)
        if leaves is None:
            leaves = render_leaves(values)
        with self._lock:
            sid = str(next(self._session_ids))
            state = _Run(self._handle, self._actions, sid, self._max_firings)
            try:
                state.assert_and_drain(self._program.encode_patient(values, leaves, sid))
                for marker in self._markers:  # stratum k starts only once everything below it has run
                    if state.failure is not None:
                        break
                    state.assert_and_drain(self.marker_fact(marker, sid, state.firings))
            finally:
                try:
                    _dre.delete_state(self._handle, sid)
                except _dre.error as exc:
                    state.fail(exc)
            if state.failure is not None:
                raise EngineError(f"rules engine failed; no result was produced: {state.failure}") from (
                    state.failure if isinstance(state.failure, BaseException) else None
                )
            return state.firings

    def marker_fact(self, marker: tuple[str, tuple[tuple[str, str, str], ...]], sid: str,
                    firings: Sequence[Firing]) -> str:
        """A stratum's marker fact: each settled derived fact it reports holds when a rule deriving it has fired."""
        head, fields = marker
        derives = self._derives
        held = {derives[name] for name, _ in firings if name in derives}
        return head % sid + "".join(true if fact in held else false for fact, true, false in fields) + "}"


class _Run:
    """The state of one evaluation's session (its firings, asserted facts and first failure)."""

    __slots__ = ("handle", "actions", "sid", "max_firings", "firings", "asserted", "failure")

    def __init__(self, handle: int, actions: Mapping[str, tuple[tuple[str, ...], bool]], sid: str,
                 max_firings: int):
        self.handle = handle
        self.actions = actions
        self.sid = sid
        self.max_firings = max_firings
        self.firings: list[Firing] = []
        self.asserted: set[str] = set()
        self.failure: BaseException | str | None = None

    def fail(self, reason: BaseException | str) -> None:
        if self.failure is None:
            self.failure = reason

    def assert_and_drain(self, fact: str) -> None:
        try:
            result, state = _dre.assert_fact(self.handle, fact)
        except _dre.error as exc:
            self.fail(exc)
            return
        if result == _NOT_HANDLED:
            return
        try:
            started = _dre.start_action_for_state(self.handle, state)
            message = started[1] if started else None
            while message is not None:
                if self.failure is None:
                    self._act(message)
                # Keep completing actions even after a failure: the session must be drained before deletion.
                message = _dre.complete_and_start_action(self.handle, state)
        except _dre.error as exc:
            self.fail(exc)

    def _act(self, message: str) -> None:
        try:
            # Messages start with {"<rule name>": ... ; reading the name is enough for all but suppressions.
            name = message[2 : message.index('"', 2)]
            asserts, keep_message = self.actions[name]
            self.firings.append((name, message if keep_message else None))
            if len(self.firings) > self.max_firings:
                self.fail(f"loop guard: more than {self.max_firings} rule firings in one evaluation")
                return
            for template in asserts:
                if template not in self.asserted:
                    self.asserted.add(template)
                    _dre.assert_fact(self.handle, template % self.sid)
        except Exception as exc:  # noqa: BLE001 - recorded and re-raised as EngineError after draining
            self.fail(exc)


def installed_version(distribution: str) -> str:
    """The installed version of a distribution (``imt-cds``, ``durable-rules``), or "unknown"."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _versions() -> dict[str, str]:
    return {
        "imt_cds": installed_version("imt-cds"),
        "durable_rules": installed_version("durable-rules"),
        "python": platform.python_version(),
    }


class AuditSink(Protocol):
    """Where an engine records every assessment it makes (see the ``audit`` package). ``append`` must raise when it
    cannot record durably; the engine then raises too, so no unrecorded assessment is ever returned."""

    def append(self, assessment: Assessment) -> str: ...


class Engine:
    """An independent evaluator for one rulebook. Safe to share between threads; evaluations never depend on what
    was evaluated before.

    ``Engine()`` uses the shipped rulebook; ``Engine(rulebook)`` takes a loaded ``Rulebook`` or a rulebook
    directory (an institution's copy with its own parameters, or a rule author's working copy).
    """

    def __init__(self, rulebook: Rulebook | str | Path | None = None, *, max_firings: int = DEFAULT_MAX_FIRINGS,
                 cache_size: int = 0, audit: AuditSink | None = None):
        # Checked before the rulebook is loaded and compiled: a wrong argument is said at once, not after seconds.
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidSettingError("cache_size", cache_size, "a whole number of assessments, 0 (no cache) or more")
        if not isinstance(rulebook, Rulebook):
            rulebook = load_rulebook(rulebook)
        self.rulebook = rulebook
        self.program = compile_rulebook(rulebook)
        self.versions = _versions()
        self._templates = OutputTemplates(self.program, self.versions)
        self._ruleset = _DurableRuleset(self.program, max_firings)
        # Optional memo of assessments by (canonical input, rulebook): see memo.py. Off unless asked for.
        self._cache: MemoCache[tuple[Firing, ...]] | None = MemoCache(cache_size) if cache_size else None
        self.audit = audit
        self._probe: tuple[_DurableRuleset, dict[str, Atom]] | None = None  # built on first explanation
        self._probe_lock = threading.Lock()

    def evaluate(self, facts: PatientFacts | Mapping[str, Any], *, evaluated_at: datetime | None = None,
                 diagnosis: Mapping[str, Any] | None = None) -> Assessment:
        """Evaluate one patient. Raises ``InvalidInputError`` (bad input, nothing evaluated) or ``EngineError``.

        ``diagnosis``: what established the IMT diagnosis, when the facts were read from a chart (``imt_cds.fhir``'s
        ``Diagnosis.to_dict()``); it is kept in ``provenance.diagnosis`` (and so in the audit record)."""
        patient = parse_facts(facts)
        values = leaf_values(patient)
        leaves = render_leaves(values)
        digest = input_sha256(patient, leaves)
        when = evaluated_at or datetime.now(timezone.utc)
        firings: Sequence[Firing] | None
        if self._cache is None:
            firings = self._ruleset.run(patient, values, leaves)
        else:
            # An assessment is a pure function of (facts, firings); the facts are in hand (they gave the key), so
            # the engine's firings are all a cache entry needs: small, and (a tuple of strings) ignored by the GC.
            key = (digest, self.rulebook.sha256)
            firings = self._cache.get(key)
            if firings is None:
                firings = tuple(self._ruleset.run(patient, values, leaves))
                self._cache.put(key, firings)
        assessment = build_assessment(self._templates, patient, leaves, firings, digest, when, diagnosis)
        if self.audit is not None:
            # Fail closed: an assessment that could not be recorded is not returned (the sink raises).
            self.audit.append(assessment)
        return assessment

    def true_conditions(self, facts: PatientFacts | Mapping[str, Any]) -> frozenset[Atom]:
        """The rulebook's fact tests that hold for a patient, decided by the engine (for explanations)."""
        with self._probe_lock:
            if self._probe is None:
                program, atoms = compile_probe(self.rulebook)
                self._probe = (_DurableRuleset(program, DEFAULT_MAX_FIRINGS), atoms)
        ruleset, atoms = self._probe
        return frozenset(atoms[name] for name, _ in ruleset.run(parse_facts(facts)) if name in atoms)

    def cache_stats(self) -> CacheStats | None:
        """Hits, misses and size of the memo cache (None when the engine has none)."""
        return self._cache.stats() if self._cache is not None else None

    def __repr__(self) -> str:
        rb = self.rulebook
        return f"<Engine rulebook={rb.name} {rb.version} sha256={rb.sha256[:12]} rules={len(self.program.rules)}>"


_default_lock = threading.Lock()


@lru_cache(maxsize=1)
def _build_default_engine() -> Engine:
    return Engine()


def default_engine() -> Engine:
    """The process-wide engine for the shipped rulebook, built on first use (and only once, even from threads)."""
    with _default_lock:
        return _build_default_engine()


def evaluate(facts: PatientFacts | Mapping[str, Any], *, evaluated_at: datetime | None = None,
             diagnosis: Mapping[str, Any] | None = None) -> Assessment:
    """Evaluate one patient with the shipped rulebook (see ``Engine`` for another rulebook)."""
    return default_engine().evaluate(facts, evaluated_at=evaluated_at, diagnosis=diagnosis)
