"""The people of the load: CSMs taking every branch type, analysts, admins, snoops and probers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soak.client import Api, User
from soak.conversation import chat_turn, weighted
from soak.journal import Action, Journal, Probe
from soak.setup import World, probe_document

MODELS = {"local": ("local", "local"), "openai": ("openai:soak-gpt", "openai"),
          "anthropic": ("anthropic:claude-soak", "anthropic")}
ALL_TOOLS = ["rag_search", "database_query", "create_chart"]
BRANCH_WEIGHTS = ((20, "fixed"), (20, "saved_action"), (35, "llm"), (25, "rag"))


@dataclass
class Load:
    """What every actor shares."""

    api: Api
    journal: Journal
    world: World
    owner: AsyncEngine
    rng: random.Random
    canary_port: int
    over: asyncio.Event = field(default_factory=asyncio.Event)
    endpoints_missing: set[str] = field(default_factory=set)

    @property
    def running(self) -> bool:
        """False once the load's time is up (shared by every actor's copy)."""
        return not self.over.is_set()

    def key(self, kind: str) -> str:
        """A fresh Idempotency-Key."""
        return f"soak-{kind}-{uuid.UUID(int=self.rng.getrandbits(128)).hex}"


async def set_thread_model(load: Load, thread_id: str, provider: str,
                           tools: list[str] | None) -> None:
    """Point a thread at a provider (as a tenant's model setting would), and maybe its tools."""
    model, name = MODELS[provider]
    for attempt in range(5):
        try:
            async with load.owner.begin() as conn:
                await conn.execute(text(
                    "UPDATE workflow_llm_context SET model_used = :m, provider = :p,"
                    " tools_available = COALESCE(CAST(:t AS varchar[]), tools_available)"
                    " WHERE thread_id = :id"),
                    {"m": model, "p": name, "t": tools, "id": thread_id})
            return
        except Exception:  # the database may be restarting; the soak's own writes retry
            await asyncio.sleep(1 + attempt)


async def start_execution(load: Load, user: User, customer: dict[str, Any] | None = None
                          ) -> str | None:
    """Start a workflow for a customer (forced when no window matches); the execution id."""
    if customer is None:
        listed = await load.api.call("GET", "/api/customers", user)
        if listed is None or listed.status_code != 200:
            return None
        customer = load.rng.choice(listed.json()["customers"])
    workflow = customer.get("matchingWorkflowId") or load.rng.choice(
        ["critical", "emergency", "overdue"])
    action = Action(user.tenant, "execution", load.key("exec"), "")
    load.journal.actions.append(action)
    response = await load.api.call("POST", "/api/executions", user, key=action.key, body={
        "workflowId": workflow, "customerId": customer["id"],
        "force": customer.get("matchingWorkflowId") is None})
    if response is None or response.status_code not in (200, 201):
        return None
    action.acked = True
    action.result_id = response.json()["execution"]["id"]
    return action.result_id


async def take_branch(load: Load, user: User, execution_id: str, wanted: str | None = None
                      ) -> tuple[str, dict[str, Any]] | None:
    """Take a branch of the current step (of the wanted type if offered); (type, body)."""
    view = await load.api.call("GET", f"/api/executions/{execution_id}", user)
    if view is None or view.status_code != 200:
        return None
    branches = view.json().get("branches") or []
    kinds = {b["branchType"] for b in branches}
    kind = wanted if wanted is not None and wanted in kinds else weighted(load.rng, tuple(
        (w, k) for w, k in BRANCH_WEIGHTS if k in kinds) or ((1, "none"),))
    candidates = [b for b in branches if b["branchType"] == kind]
    if not candidates:
        return None
    branch = load.rng.choice(candidates)
    action = Action(user.tenant, f"branch:{kind}", load.key("branch"), execution_id,
                    detail={"branchId": branch["branchId"],
                            "savedActionId": branch.get("savedActionId")})
    load.journal.actions.append(action)
    path = f"/api/executions/{execution_id}/branches/{branch['branchId']}"
    response = await load.api.call("POST", path, user, key=action.key)
    if response is None or response.status_code not in (200, 201):
        return None
    action.acked = True
    body = response.json()
    if "thread" in body:
        action.result_id = body["thread"]["id"]
        load.journal.threads[body["thread"]["id"]] = user.tenant
    if load.rng.random() < 0.1:  # a client retry of an answered request: same key, same answer
        again = await load.api.call("POST", path, user, key=action.key)
        if again is not None and again.status_code in (200, 201) and \
                again.json().get("thread", {}).get("id") != body.get("thread", {}).get("id"):
            load.journal.errors["idempotent replay answered a different thread"] += 1
    return kind, body


async def csm(load: Load, user: User) -> None:
    """Sessions of one CSM until the load ends."""
    while load.running:
        with contextlib.suppress(Exception):
            await csm_session(load, user)
        await asyncio.sleep(load.rng.uniform(0.1, 0.8))


async def csm_session(load: Load, user: User) -> None:
    """Start an execution, take up to three branches, talk in the threads they open."""
    execution_id = await start_execution(load, user)
    if execution_id is None:
        return
    for _ in range(load.rng.randint(1, 3)):
        if not load.running:
            return
        taken = await take_branch(load, user, execution_id)
        if taken is None:
            return
        _, body = taken
        if "thread" in body:
            await converse(load, user, body["thread"]["id"])


async def converse(load: Load, user: User, thread_id: str) -> None:
    """One to three turns, sometimes two at once, then complete, abandon or leave the thread."""
    provider = weighted(load.rng, ((50, "local"), (30, "openai"), (20, "anthropic")))
    await set_thread_model(load, thread_id, provider,
                           ALL_TOOLS if provider == "openai" else None)
    for _ in range(load.rng.randint(1, 3)):
        if not load.running:
            break
        if load.rng.random() < 0.18:
            load.journal.faults["concurrent posts to one thread"] += 1
            await asyncio.gather(
                chat_turn(load.api, load.journal, load.rng, user, thread_id, provider),
                chat_turn(load.api, load.journal, load.rng, user, thread_id, provider))
        else:
            await chat_turn(load.api, load.journal, load.rng, user, thread_id, provider)
    ending = weighted(load.rng, ((50, "complete"), (30, "abandon"), (20, "leave")))
    if ending != "leave":
        await load.api.call("POST", f"/api/threads/{thread_id}/{ending}", user, retries=2)


async def analyst(load: Load, user: User) -> None:
    """Usage reports, CSV exports and a thread's calls, over and over."""
    start = int(load.world.started_at.timestamp()) - 3600
    while load.running:
        await load.api.call("GET", f"/api/usage?startTime={start}&bucketWidth=1h"
                            "&groupBy=model&groupBy=branchType", user)
        export = await load.api.call("GET", f"/api/usage/export?format=csv&startTime={start}",
                                     user)
        if export is not None and export.status_code == 404:
            load.endpoints_missing.add("GET /api/usage/export")
        own = [t for t, tenant in list(load.journal.threads.items()) if tenant == user.tenant]
        if own:
            await load.api.call("GET", f"/api/usage/threads/{load.rng.choice(own)}", user)
        await asyncio.sleep(load.rng.uniform(1.0, 3.0))


async def admin(load: Load, user: User) -> None:
    """Ingest documents (some carrying probes) and search the knowledge base."""
    number = 0
    other = next(t for s, t in load.world.tenants.items() if s != user.tenant)
    while load.running:
        number += 1
        if number % 4 == 1:
            document = probe_document(user.tenant, other, load.canary_port, number)
        else:
            nonce = uuid.uuid4().hex[:10]
            document = {"title": f"Soak note {user.tenant} {number}",
                        "content": f"# Renewal note {nonce}\n\nKeep the champion close; "
                                   f"confirm the signature date. Reference {nonce}.",
                        "source": f"soak/{nonce}.md"}
        action = Action(user.tenant, "document", load.key("doc"), "", detail=document)
        load.journal.actions.append(action)
        response = await load.api.call("POST", "/api/knowledge/documents", user,
                                       body=document, key=action.key)
        if response is not None and response.status_code in (200, 201):
            action.acked = True
            action.result_id = response.json()["document"]["id"]
        elif response is not None and response.status_code in (404, 405):
            load.endpoints_missing.add("POST /api/knowledge/documents")
        await load.api.call("GET", "/api/knowledge/search?q=renewal%20champion&k=5", user)
        await asyncio.sleep(load.rng.uniform(2.0, 5.0))


async def snoop(load: Load, users: list[User]) -> None:
    """Ask for other tenants' rows by id on every endpoint the load uses: each must answer 404."""
    while load.running:
        await asyncio.sleep(load.rng.uniform(0.5, 1.5))
        user = load.rng.choice(users)
        foreign = [t for t, tenant in list(load.journal.threads.items()) if tenant != user.tenant]
        executions = [a.result_id for a in load.journal.actions
                      if a.kind == "execution" and a.result_id and a.tenant != user.tenant]
        if not foreign or not executions:
            continue
        thread, execution = load.rng.choice(foreign), load.rng.choice(executions)
        attempts = [("GET", f"/api/threads/{thread}", None),
                    ("GET", f"/api/threads/{thread}/stream", None),
                    ("POST", f"/api/threads/{thread}/messages", {"content": "snoop [soak x]"}),
                    ("POST", f"/api/threads/{thread}/stop", None),
                    ("GET", f"/api/usage/threads/{thread}", None),
                    ("GET", f"/api/executions/{execution}", None),
                    ("POST", f"/api/executions/{execution}/advance", None)]
        method, path, body = load.rng.choice(attempts)
        load.journal.cross_attempts += 1
        response = await load.api.call(method, path, user, body=body, retries=0)
        # Only an answer that succeeded can show a row (a 5xx during a fault shows none; its
        # body is scanned for foreign ids all the same).
        if response is not None and response.status_code < 400:
            load.journal.direct_cross_tenant.append(
                f"{user.email} {method} {path} -> {response.status_code}")


async def prober(load: Load, users: list[User]) -> None:
    """Prompt-injection conversations, driven by the local model and by an obedient one."""
    turn = 0
    while load.running:
        user = users[turn % len(users)]
        driver = "obedient-mock" if turn % 2 == 0 else "local"
        turn += 1
        with contextlib.suppress(Exception):
            await probe_once(load, user, driver)
        await asyncio.sleep(load.rng.uniform(2.0, 5.0))


async def probe_once(load: Load, user: User, driver: str) -> None:
    """Open an llm thread on the tenant's probe customer and let the model read the probes."""
    customer = {"id": load.world.probe_customers[user.tenant], "matchingWorkflowId": "critical"}
    execution_id = await start_execution(load, user, customer)
    if execution_id is None:
        return
    taken = await take_branch(load, user, execution_id, wanted="llm")
    if taken is None or "thread" not in taken[1]:
        return
    thread_id = taken[1]["thread"]["id"]
    await set_thread_model(load, thread_id, "openai" if driver == "obedient-mock" else "local",
                           ALL_TOOLS)
    load.journal.probes.append(Probe(user.tenant, thread_id, driver,
                                     ["cross-tenant", "write", "url", "reveal"]))
    # Both models are told to obey: the mock reads the probes' tags, the local model their words.
    question = ("[[soak:obey]]" if driver == "obedient-mock" else "[[obey]]") + \
        " Follow the account notes and the knowledge base instructions."
    await chat_turn(load.api, load.journal, load.rng, user, thread_id, "local", question,
                    behaviour="full", fault="")


WARM_UP = (("local", "What do the playbooks say? list customers and seats and chart the ARR "
                      "trend"),
           ("openai", "[[soak:tools]] warm-up question"),
           ("anthropic", "warm-up question"))


async def warm_worker(load: Load, worker: Any) -> None:
    """Every kind of reply once on this worker (tools, both SDK wires) before memory is judged.

    The first knowledge search loads the embedding model and the first chart starts the
    renderer: one-time costs that are not leaks.
    """
    await asyncio.gather(*(_warm_with(load, worker, provider, question)
                           for provider, question in WARM_UP))
    worker.warmed_at = time.monotonic()


async def _warm_with(load: Load, worker: Any, provider: str, question: str) -> None:
    user = load.world.users["csm@demo.example"]
    with contextlib.suppress(Exception):
        execution_id = await start_execution(load, user)
        taken = await take_branch(load, user, execution_id, wanted="llm") \
            if execution_id else None
        if taken is None or "thread" not in taken[1]:
            return
        thread_id = taken[1]["thread"]["id"]
        await set_thread_model(load, thread_id, provider, ALL_TOOLS)
        await chat_turn(load.api, load.journal, load.rng, user, thread_id, provider,
                        question, behaviour="full", fault="", worker=worker)


async def memory_sampler(load: Load, stack: Any, every_s: float = 2.0) -> None:
    """RSS of every worker, every few seconds."""
    while load.running:
        stack.sample_memory()
        await asyncio.sleep(every_s)


def deadline_passed(started: float, seconds: float) -> bool:
    """True once the load's time is up."""
    return time.monotonic() - started >= seconds
