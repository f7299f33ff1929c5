"""Condition matching behind our own small interface, so durable-rules can be swapped out.

The interface only answers "which rules' conditions match this fact": actions are never run
inside the engine; app.rules.decision turns the matched rules into a Decision in Python.

durable-rules traps this module handles (measured on 2.0.28, see docs/rules.md):
- not thread-safe: one Host per process, every call under one global lock;
- the Host's two dispatch/timer threads call the C engine outside any lock and loop over every
  registered ruleset forever; we use neither timers nor async actions, so they are not started;
- 1024 live sessions per ruleset: delete_state after every evaluation;
- delete_state after MessageNotHandledException segfaults, and not deleting leaks the session:
  every compiled ruleset gets an internal catch-all rule so every order fact is handled;
- exceptions in actions are swallowed into state["exception"]: checked after every call;
- a registered name can't be replaced: each rule-set version gets its own name;
- ruleset creation errors only carry a number (e.g. 501 = bad regex).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import durable_rules_engine
from durable.engine import Host, MessageNotHandledException, MessageObservedException, Ruleset

from app.rules.facts import GUARD_FIELD, GUARD_VALUE

GUARD = {GUARD_FIELD: GUARD_VALUE}
Condition = dict[str, Any]  # a normalised `when`: {"all": [{"m": expr}]} or {"any": [{"m": expr}, ...]}


class RuleEngineError(RuntimeError):
    """The matching engine failed for one evaluation (the order is not decided)."""


class Evaluator(Protocol):
    def register(self, name: str, rules: Sequence[tuple[int, Condition]]) -> None:
        """Register rules (priority, condition) under a new, never reused name (idempotent per name)."""

    def is_registered(self, name: str) -> bool: ...

    def matched(self, name: str, sid: str, fact: dict[str, Any]) -> list[int]:
        """Indexes (into the registered sequence) of the rules whose condition matches ``fact``."""

    def compile_error(self, rules: Sequence[tuple[int, Condition]]) -> str | None:
        """Compile ``rules`` without keeping them; the engine's error message, or None."""


def guarded(condition: Condition) -> Condition:
    """Add the order-fact guard to every term (see facts.GUARD_FIELD for why)."""
    ((kind, terms),) = condition.items()
    return {kind: [{"m": {"$and": [GUARD, term["m"]]}} for term in terms]}


class _QuietHost(Host):  # type: ignore[misc]  # durable-rules has no type information
    def _run(self) -> None:
        # Host() starts two self-rescheduling threads (action dispatch and timers) that call the
        # C engine without our lock. Every action here completes inside assert_fact and no timer
        # is ever started, so they would only race with evaluations and spin.
        pass


class _RecordingRuleset(Ruleset):  # type: ignore[misc]
    """A durable-rules Ruleset whose actions only record which rule matched.

    Profiling showed ~70 % of an evaluation in durable's per-action Python machinery (a Closure,
    the session state decoded, re-encoded and written back, the whole fact decoded from JSON
    once per action). Our actions change nothing, so each one is completed directly in the C
    engine and only the rule name is read from the action message ('{"r3":{"m":...}}').
    """

    def __init__(self, name: str, host: Host, definition: dict[str, Any], sink_owner: DurableEvaluator):
        super().__init__(name, host, definition)
        self._owner = sink_owner

    def do_actions(self, state_handle: int, complete: Any) -> None:
        result = durable_rules_engine.start_action_for_state(self._handle, state_handle)
        message = result[1] if result else None
        try:
            while message:
                self._owner._record(message[2 : message.index('"', 2)])
                message = durable_rules_engine.complete_and_start_action(self._handle, state_handle)
        except BaseException:
            durable_rules_engine.abandon_action(self._handle, state_handle)
            raise
        complete(None, None)


class DurableEvaluator:
    """durable-rules 2.0.28 under one process-wide lock."""

    _CATCH_ALL = "kp_all"
    _ERROR_CODE = re.compile(r"error code: (\d+)")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host = _QuietHost()
        self._names: set[str] = set()
        self._sink: list[int] = []
        self._scratch = itertools.count()

    def register(self, name: str, rules: Sequence[tuple[int, Condition]]) -> None:
        definition: dict[str, Any] = {}
        for index, (priority, condition) in enumerate(rules):
            definition[f"r{index}"] = {**guarded(condition), "pri": priority, "run": _ignore}
        definition[self._CATCH_ALL] = {"all": [{"m": GUARD}], "run": _ignore}
        with self._lock:
            if name in self._names:
                return
            # What Host.register_rulesets does, with our Ruleset class.
            ruleset = _RecordingRuleset(name, self._host, definition, self)
            self._host._ruleset_directory[name] = ruleset
            self._host._ruleset_list.append(ruleset)
            self._names.add(name)

    def is_registered(self, name: str) -> bool:
        return name in self._names

    def _record(self, rule_name: str) -> None:
        if rule_name != self._CATCH_ALL:
            self._sink.append(int(rule_name[1:]))

    def matched(self, name: str, sid: str, fact: dict[str, Any]) -> list[int]:
        # durable-rules writes the session id into its state keys unescaped: a quote or a
        # backslash in an order id broke the session for good (error 309). A digest of it is
        # as unique and always safe.
        sid = hashlib.sha1(sid.encode("utf-8", "surrogatepass")).hexdigest()
        fact = {**fact, "sid": sid}
        with self._lock:
            sink: list[int] = []
            self._sink = sink
            try:
                self._host.assert_fact(name, fact)
            except MessageObservedException:
                # A session left over for this sid (should not happen: we always delete). Start clean.
                self._host.delete_state(name, sid)
                sink.clear()
                self._host.assert_fact(name, fact)
            except MessageNotHandledException as exc:
                # Never delete_state here: it segfaults. The catch-all rule makes this unreachable
                # for facts that carry the guard.
                raise RuleEngineError(f"{name}: fact without the order guard was not handled") from exc
            state = self._host.get_state(name, sid)
            self._host.delete_state(name, sid)
        if state.get("exception"):
            raise RuleEngineError(f"{name}: action failed inside durable-rules: {state['exception']}")
        return sink

    def compile_error(self, rules: Sequence[tuple[int, Condition]]) -> str | None:
        definition = {f"r{i}": {**guarded(c), "pri": p} for i, (p, c) in enumerate(rules)}
        with self._lock:
            # Straight to the C engine: a Host registration could never be removed again.
            name = f"kp_check_{next(self._scratch)}"
            try:
                handle = durable_rules_engine.create_ruleset(name, json.dumps(definition, ensure_ascii=False))
            except Exception as exc:  # durable_rules_engine.error carries only a number
                return describe_error(str(exc))
            durable_rules_engine.delete_ruleset(handle)
        return None


_ENGINE_ERRORS = {
    "101": "bad JSON in a condition",
    "102": "a condition the engine cannot parse",
    "501": "a pattern the engine cannot compile",
    "508": "a pattern the engine cannot compile (repeated quantifier?)",
}


def describe_error(message: str) -> str:
    match = DurableEvaluator._ERROR_CODE.search(message)
    code = match.group(1) if match else "?"
    return f"{_ENGINE_ERRORS.get(code, 'the engine refused the rule')} (durable-rules error {code})"


def _ignore(_closure: Any) -> None:
    pass


_evaluator: DurableEvaluator | None = None
_evaluator_lock = threading.Lock()


def get_evaluator() -> Evaluator:
    """The process-wide evaluator (one durable-rules Host per process)."""
    global _evaluator
    if _evaluator is None:
        with _evaluator_lock:
            if _evaluator is None:
                _evaluator = DurableEvaluator()
    return _evaluator
