"""A client with azure.ai.ml's MLClient interface, as far as the pipeline uses it, for the stand-in service.

``jobs.create_or_update`` takes the real azure-ai-ml ``Command`` and sends the body azure-ai-ml
would send to the REST API; ``get`` and ``begin_cancel`` answer as the service's statuses
say, raising azure-core's own errors (ResourceNotFoundError, HttpResponseError) as the real
client does; ``_runs_operations.get_run_details`` gives the run history's error and times.
``compute``, ``environments`` and ``datastores`` keep what provisioning sends, in memory for this
client, and register it with the service, where every other process's client finds it (a compute
with its provisioning state and errors, which a test may set there).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError


def _call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read() or b"{}").get("error", str(exc))
        if exc.code == 404:
            raise ResourceNotFoundError(message) from None
        if exc.code == 409:
            raise ResourceExistsError(message) from None
        raise HttpResponseError(message) from None


UNUSED = "http://unused"  # a client that only provisions, with no service behind it


def _time(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, UTC) if t else None


@dataclass
class JobView:
    """What azure-ai-ml's Job gives the pipeline: name, status, Studio link, tags, when created."""

    name: str
    status: str
    studio_url: str
    tags: dict
    creation_context: Any
    transitions: list[str]

    @classmethod
    def of(cls, view: dict) -> JobView:
        return cls(view["name"], view["status"], view["studio_url"], view["tags"],
                   SimpleNamespace(created_at=_time(view["created"])), view["transitions"])


class Poller:
    def result(self, timeout: float | None = None) -> None:
        return None

    def wait(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True


class StandinJobs:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._runs_operations = SimpleNamespace(get_run_details=self._run_details)

    def create_or_update(self, job: Any) -> JobView:
        from azure.ai.ml.entities import Command

        assert isinstance(job, Command), type(job)
        body = job._to_job()._to_rest_object().as_dict()  # the body azure-ai-ml sends
        body["name"] = job.name
        return JobView.of(_call(f"{self.url}/jobs", "POST", body))

    def get(self, name: str) -> JobView:
        return JobView.of(_call(f"{self.url}/jobs/{name}"))

    def begin_cancel(self, name: str) -> Poller:
        _call(f"{self.url}/jobs/{name}/cancel", "POST", {})
        return Poller()

    def _run_details(self, name: str) -> Any:
        view = _call(f"{self.url}/jobs/{name}")
        error = {"error": {"code": view["error_code"], "message": view["error"]}} if view["error"] else None
        return SimpleNamespace(
            status=view["status"], error=SimpleNamespace(as_dict=lambda: error) if error else None,
            created_time_utc=_time(view["created"]), start_time_utc=_time(view["started"]),
            end_time_utc=_time(view["ended"]))

    # -- steering the stand-in (tests only) --------------------------------------------------------
    def add_rule(self, **rule: Any) -> None:
        _call(f"{self.url}/rules", "POST", rule)

    def release(self, name: str) -> None:
        _call(f"{self.url}/jobs/{name}/release", "POST", {})

    def state(self) -> dict:
        return _call(f"{self.url}/state")


class Assets:
    """compute / environments / datastores: get and create_or_update; what this client created
    (the entities themselves), else what the service has registered (a summary of them)."""

    def __init__(self, kind: str, url: str | None = None) -> None:
        self.kind, self.url, self.items, self.writes = kind, url, {}, []

    def _key(self, name: str, version: str | None = None) -> str:
        return f"{name}:{version}" if version else name

    def get(self, name: str, version: str | None = None) -> Any:
        key = self._key(name, version)
        if key in self.items:
            return self.items[key]
        if self.url:
            try:
                return SimpleNamespace(**_call(f"{self.url}/assets/{self.kind}/{key}"))
            except ResourceNotFoundError:
                pass
        raise ResourceNotFoundError(f"{self.kind} {key} not found")

    def create_or_update(self, entity: Any) -> Any:
        # A compute comes back as the service describes it (tier, identity and idle time mapped both ways).
        stored = type(entity)._load_from_rest(entity._to_rest_object()) if self.kind == "compute" else entity
        version = getattr(entity, "version", None) if self.kind == "environments" else None
        self.items[self._key(entity.name, version)] = stored
        self.writes.append(entity)
        if self.url:
            key = self._key(entity.name, version)
            _call(f"{self.url}/assets/{self.kind}/{key}", "POST", summary(self.kind, stored))
        return stored

    def begin_create_or_update(self, entity: Any) -> Any:
        stored = self.create_or_update(entity)
        return SimpleNamespace(result=lambda timeout=None: stored)


def summary(kind: str, entity: Any) -> dict:
    """What another process's client sees of an asset."""
    if kind == "compute":
        return {"name": entity.name, "size": entity.size, "provisioning_state": "Succeeded", "provisioning_errors": []}
    if kind == "environments":
        return {"name": entity.name, "version": entity.version}
    return {"name": entity.name, "account_name": getattr(entity, "account_name", None),
            "container_name": getattr(entity, "container_name", None)}


class StandinMLClient:
    def __init__(self, url: str) -> None:
        url = url.rstrip("/")
        self.jobs = StandinJobs(url)
        self.compute = Assets("compute", None if url == UNUSED else url)
        self.environments = Assets("environments", None if url == UNUSED else url)
        self.datastores = Assets("datastores", None if url == UNUSED else url)

    # steering the stand-in (tests only)
    def add_rule(self, **rule: Any) -> None:
        self.jobs.add_rule(**rule)

    def release(self, name: str) -> None:
        self.jobs.release(name)

    def state(self) -> dict:
        return self.jobs.state()
