"""The local Azure ML service's REST front: HTTPS, the URLs and bodies azure-ai-ml 1.35.2 uses.

What a real MLClient reaches here, in the order it does:
- the ARM cloud metadata (``ARM_CLOUD_METADATA_URL``: azure-ai-ml's own setting for clouds
  other than Azure's public ones), naming this service as resource manager and sign-in authority;
- the token authority (``/<tenant>/v2.0/.well-known/openid-configuration`` and ``/oauth2/v2.0/token``),
  for a real azure-identity ClientSecretCredential: a wrong secret is refused with 401 as Entra
  ID refuses it, and every other call needs a bearer token it issued;
- the workspace (ARM) and its discovery document (where the run history lives);
- jobs: create (PUT), get, list, cancel (202, an operation to poll); computes, environments and
  datastores: get and create (PUT); the run history's details of a job (error, times).

Every body is read with, and written from, azure-ai-ml's own generated REST models
(``_restclient.arm_ml_service`` and ``_restclient.runhistory``): what the SDK sends is
deserialized as the service would, what it answers is what the SDK's models serialize.

Faults, as Azure ML shows them: ``fail(...)`` answers a matching request with a status (429
with Retry-After, 5xx, 403, 409) a number of times, or applies it and then drops the
connection before answering (a read timeout after the service applied a PUT); ``revoke()``
makes every issued token invalid (401 mid-run); ``refuse_sign_in`` makes the token authority
refuse the secret; the engine's ``quota_error`` keeps jobs Queued while the cluster reports the
error where Azure ML reports a failed scale-up (the AmlCompute's ``properties.errors``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.azureml_service.jobs import Job, JobService
from tests.azureml_service.tls import make_certificates

CLOUD = "VidstyleLocal"
SECRET_ENV = "VIDSTYLE_LOCAL_AZUREML_SECRET"
TENANT = "00000000-0000-0000-0000-00000000beef"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SUBSCRIPTION = "0000-sub"
RESOURCE_GROUP = "media-rg"
WORKSPACE = "media-ml"
WORKSPACE_ID = "6f1c0d4e-0000-4000-8000-00000000cafe"
PROVIDER = "/providers/Microsoft.MachineLearningServices/workspaces/"
ARM = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)" + PROVIDER +
                 r"(?P<ws>[^/]+)(?P<rest>(/[^/]+)*)$", re.IGNORECASE)
HISTORY = re.compile(r"^/history/v1\.0(?P<arm>/subscriptions/.+?)/runs/(?P<run>[^/]+)/details$", re.IGNORECASE)


def _stamp(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") if t else None


@dataclass
class Fault:
    """Answer matching requests with ``status`` (or apply them and drop the connection), ``times`` times."""

    method: str
    path: str  # a regex searched in the path
    status: int = 500
    times: int = 1
    retry_after: float | None = None
    code: str = "InternalServerError"
    message: str = "the service had an error"
    drop_after_applying: bool = False
    seen: int = 0


@dataclass
class Calls:
    """Every request the service answered, by kind: what the benchmark counts against Azure's limits."""

    log: list[tuple[float, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.log.append((time.time(), method, path, status))

    def summary(self) -> dict:
        """Reads (GET) and writes (PUT, POST) of the workspace's API, and when the last was."""
        with self.lock:
            api = [(t, m) for t, m, p, _s in self.log if p.startswith(("/subscriptions/", "/history/"))]
        return {"reads": sum(1 for _, m in api if m == "GET"), "writes": sum(1 for _, m in api if m != "GET"),
                "last": api[-1][0] if api else None}

    def count(self, method: str | None = None, pattern: str = "") -> int:
        with self.lock:
            return sum(1 for _, m, p, _s in self.log if (method is None or m == method) and re.search(pattern, p))


class AzureMLService:
    """The whole local service: the engine (jobs.py), the workspace's assets, sign-in and faults."""

    def __init__(self, engine: JobService, client_secret: str | None = None) -> None:
        self.engine = engine
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.tokens: set[str] = set()
        self.refuse_sign_in = False
        self.faults: list[Fault] = []
        self.assets: dict[str, dict] = {}  # lower-cased ARM sub-path ("/computes/x") -> its REST body
        self.calls = Calls()
        self.base = ""  # https://127.0.0.1:<port>, once served
        self.lock = threading.Lock()

    # -- steering (tests) ---------------------------------------------------------------------------
    def fail(self, method: str, path: str, **fault: Any) -> Fault:
        made = Fault(method, path, **fault)
        with self.lock:
            self.faults.append(made)
        return made

    def revoke(self) -> None:
        """Every token issued so far stops working (a secret rotated, a role removed)."""
        self.tokens.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path, path) and fault.seen < fault.times:
                    fault.seen += 1
                    return fault
        return None

    def set_compute(self, name: str, body: dict) -> None:
        self.assets[f"/computes/{name}".lower()] = body

    def compute_body(self, name: str) -> dict | None:
        """The cluster as the service describes it now: a failed scale-up (no quota) in its errors."""
        body = self.assets.get(f"/computes/{name}".lower())
        if body is None:
            return None
        body = json.loads(json.dumps(body))
        props = body.setdefault("properties", {}).setdefault("properties", {})
        if self.engine.quota_error:
            props["allocationState"] = "Steady"
            props["currentNodeCount"] = 0
            props["errors"] = [{"error": {"code": "QuotaExceeded", "message": self.engine.quota_error}}]
        return body

    # -- bodies -------------------------------------------------------------------------------------
    def workspace_url(self) -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}{PROVIDER}{WORKSPACE}"

    def cloud_metadata(self) -> list[dict]:
        # The shape ARM's /metadata/endpoints answers, as azure-ai-ml's _convert_arm_to_cli reads it.
        return [{"name": CLOUD, "portal": "https://portal.vidstyle.local/", "resourceManager": f"{self.base}/",
                 "authentication": {"loginEndpoint": f"{self.base}/", "audiences": [f"{self.base}/"],
                                    "tenant": "common", "identityProvider": "AAD"},
                 "suffixes": {"storage": "core.windows.net", "acrLoginServer": "azurecr.io"}}]

    def workspace(self) -> dict:
        from azure.ai.ml._restclient.arm_ml_service import models

        return _checked(models.Workspace, {
            "id": self.workspace_url(), "name": WORKSPACE, "location": "westeurope",
            "type": "Microsoft.MachineLearningServices/workspaces",
            "properties": {"workspaceId": WORKSPACE_ID,
                           "discoveryUrl": f"{self.base}/discovery/workspaces/{WORKSPACE_ID}",
                           "provisioningState": "Succeeded", "friendlyName": WORKSPACE,
                           "mlFlowTrackingUri": f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{self.workspace_url()}"}})

    def discovery(self) -> dict:
        return {key: self.base for key in ("api", "catalog", "experimentation", "history", "modelmanagement",
                                           "pipelines", "gallery")} | {"studio": "https://ml.azure.com"}

    def job_body(self, job: Job) -> dict:
        from azure.ai.ml._restclient.arm_ml_service import models

        body = json.loads(json.dumps(job.body))
        body.update(id=f"{self.workspace_url()}/jobs/{job.name}", name=job.name,
                    type="Microsoft.MachineLearningServices/workspaces/jobs",
                    systemData={"createdAt": _stamp(job.created), "createdBy": CLIENT_ID,
                                "createdByType": "Application"})
        props = body["properties"]
        props["status"] = job.status
        props["services"] = {"Studio": {"jobServiceType": "Studio", "endpoint":
                             f"https://ml.azure.com/runs/{job.name}?wsid={self.workspace_url()}&tid={TENANT}"}}
        return _checked(models.JobBase, body)

    def run_details(self, job: Job) -> dict:
        from azure.ai.ml._restclient.runhistory import models

        error = {"error": {"code": job.error_code, "message": job.error}} if job.error else None
        return _checked(models.RunDetails, {
            "runId": job.name, "status": job.status, "target": "gpu", "createdTimeUtc": _stamp(job.created),
            "startTimeUtc": _stamp(job.started), "endTimeUtc": _stamp(job.ended), "error": error})

    def create_job(self, name: str, body: dict) -> tuple[int, dict]:
        from azure.ai.ml._restclient.arm_ml_service import models

        job_base = _checked(models.JobBase, body)  # what the SDK sent, read as the service reads it
        if (existing := self.engine.jobs.get(name)) is not None:
            # Azure ML refuses to redefine a job: a PUT of a name that exists fails, whatever its body.
            return 400, _error("UserError", f"The specified resource name '{name}' already exists. A job with this "
                                            f"name has already been submitted (status {existing.status}).")
        if job_base["properties"].get("jobType") != "Command":
            return 400, _error("UserError", "only command jobs are served here")
        return 201, self.job_body(self.engine.create(name, job_base))


def _checked(model: Any, body: dict) -> dict:
    """``body`` read into azure-ai-ml's REST model and written back from it: only what the SDK's
    models know goes on the wire (an unknown shape fails here, not in the code under test)."""
    import importlib

    package = model.__module__.split(".models")[0]  # arm_ml_service or runhistory: each has its own base
    base = importlib.import_module(f"{package}._utils.model_base")
    SdkJSONEncoder, _deserialize = base.SdkJSONEncoder, base._deserialize
    return json.loads(json.dumps(_deserialize(model, body), cls=SdkJSONEncoder))


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service: AzureMLService

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: Any, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.service.calls.add(self.command, urlsplit(self.path).path, code)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

    def do_GET(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:  # noqa: PLR0911 - a router: one return per kind of request
        path, svc = urlsplit(self.path).path, self.service
        body = self._body()
        try:
            if path == "/metadata/endpoints":
                return self._reply(200, svc.cloud_metadata())
            if path.endswith("/v2.0/.well-known/openid-configuration"):
                return self._openid(path.split("/")[1])
            if path.endswith("/oauth2/v2.0/token"):
                return self._token(body)
            if path.startswith("/discovery/workspaces/"):  # as Azure's: read without signing in
                return self._reply(200, svc.discovery())
            if path.startswith("/_local/"):  # the tests' steering, when the service is a process of its own
                return self._reply(*self._steer(path.split("/")[2:], body))
            if not self._signed_in():
                challenge = f'Bearer authorization_uri="{svc.base}", error="invalid_token"'
                return self._reply(401, _error("InvalidAuthenticationToken", "The access token is invalid."),
                                   {"WWW-Authenticate": challenge})
            fault = svc.take_fault(self.command, path)
            if fault and not fault.drop_after_applying:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                return self._reply(fault.status, _error(fault.code, fault.message), headers)
            answer = self._answer(path, body)
            if fault:  # applied, and the answer never arrives: the client's read fails
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            return self._reply(*answer)
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _steer(self, parts: list[str], body: bytes) -> tuple:
        """Not Azure ML's: what a test outside this process reads and changes (its jobs, rules, assets)."""
        engine = self.service.engine
        if parts == ["state"]:
            state = engine.state()
            for name, job in engine.jobs.items():
                state["jobs"][name] |= {"name": name, "created": job.created, "started": job.started,
                                        "ended": job.ended, "reads": job.reads,
                                        "environment": job.props.get("environmentId")}
            return 200, state
        if parts == ["calls"]:  # Azure ML's own calls (ARM and run history), not sign-in or metadata
            return 200, self.service.calls.summary()
        if parts == ["rules"] and self.command == "POST":
            engine.add_rule(json.loads(body))
            return 200, {}
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "release" and parts[1] in engine.jobs:
            engine.release(parts[1])
            return 200, {}
        if parts[0] == "assets" and self.command == "POST":  # what provision would have made
            self.service.assets["/" + "/".join(parts[1:]).lower()] = json.loads(body)
            return 200, {}
        return 404, _error("NotFound", "/".join(parts))

    def _signed_in(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.service.tokens

    def _openid(self, tenant: str) -> None:
        base = f"{self.service.base}/{tenant}"
        self._reply(200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                          "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                          "issuer": f"{base}/v2.0", "token_endpoint_auth_methods_supported": ["client_secret_post"],
                          "response_types_supported": ["code", "token"], "scopes_supported": ["openid"]})

    def _token(self, body: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if self.service.refuse_sign_in or form.get("client_secret") != self.service.client_secret:
            return self._reply(401, {"error": "invalid_client", "error_description":
                                     "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                                     "in the request is the client secret value, not the client secret ID.",
                                     "error_codes": [7000215]})
        token = secrets.token_urlsafe(32)
        self.service.tokens.add(token)
        self._reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                          "access_token": token})

    def _answer(self, path: str, body: bytes) -> tuple:  # noqa: PLR0911 - a router
        svc = self.service
        if path.startswith("/operations/"):
            return 200, {"status": "Succeeded"}
        if m := HISTORY.match(path):
            job = svc.engine.jobs.get(m["run"])
            return (200, svc.run_details(job)) if job else (404, _error("NotFound", f"run {m['run']} not found"))
        m = ARM.match(path)
        if not m or m["ws"].lower() != WORKSPACE or m["sub"] != SUBSCRIPTION or m["rg"].lower() != RESOURCE_GROUP:
            return 404, _error("ResourceNotFound", f"no such resource: {path}")
        parts = [p for p in m["rest"].split("/") if p]
        if not parts:
            return 200, svc.workspace()
        if parts[0] == "jobs":
            return self._jobs(parts[1:], body)
        if parts[0] == "computes" and len(parts) == 2:
            return self._asset(path, parts, body, kind="compute")
        if parts[0] in ("datastores", "environments") and len(parts) in (2, 4):
            return self._asset(path, parts, body, kind=parts[0])
        return 404, _error("ResourceNotFound", f"no such resource: {path}")

    def _jobs(self, parts: list[str], body: bytes) -> tuple:
        svc, engine = self.service, self.service.engine
        if not parts:
            return 200, {"value": [svc.job_body(j) for j in list(engine.jobs.values())]}
        name = parts[0]
        if self.command == "PUT" and len(parts) == 1:
            return svc.create_job(name, json.loads(body))
        job = engine.get(name)
        if job is None:
            return 404, _error("UserError", f"Job {name} not found (ResourceNotFound)")
        if self.command == "GET" and len(parts) == 1:
            return 200, svc.job_body(job)
        if self.command == "POST" and parts[1:] == ["cancel"]:
            engine.cancel(name)
            return 202, None, {"Location": f"{svc.base}/operations/{uuid.uuid4()}", "Retry-After": "1"}
        return 404, _error("ResourceNotFound", f"no such job operation: {parts}")

    def _asset(self, path: str, parts: list[str], body: bytes, kind: str) -> tuple:
        from azure.ai.ml._restclient.arm_ml_service import models

        svc = self.service
        key = "/" + "/".join(parts).lower()
        model = {"compute": models.ComputeResource, "datastores": models.Datastore,
                 "environments": models.EnvironmentVersion}[kind]
        if self.command == "PUT":
            sent = json.loads(body)
            sent.update(id=path, name=parts[-1])
            if kind == "compute":
                sent["properties"]["provisioningState"] = "Succeeded"
            svc.assets[key] = _checked(model, sent)
            return 200, svc.assets[key]
        found = svc.compute_body(parts[1]) if kind == "compute" else svc.assets.get(key)
        if found is None:
            return 404, _error("ResourceNotFound", f"{kind} {'/'.join(parts[1:])} was not found in the workspace")
        return 200, _checked(model, {**found, "id": path, "name": parts[-1]})  # its ARM id, as ARM answers


def serve(service: AzureMLService, folder: Path, port: int = 0) -> tuple[ThreadingHTTPServer, Path]:
    """Serve ``service`` over HTTPS on 127.0.0.1 (a thread); returns the server and the CA that signed it."""
    ca, cert, key = make_certificates(folder)
    handler = type("BoundHandler", (Handler,), {"service": service})
    # Many processes connect at once (every worker and the triggerer, azure-ai-ml fetching the cloud
    # metadata without retries): a listen backlog of socketserver's default 5 refuses some of them.
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256})
    server = server_class(("127.0.0.1", port), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    service.base = f"https://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, ca


def client_environment(service: AzureMLService, ca: Path) -> dict[str, str]:
    """What a process needs to reach this service through azure-ai-ml's and azure-identity's own
    settings: the cloud's metadata URL, the sign-in authority and the CA to trust."""
    return {"ARM_CLOUD_METADATA_URL": f"{service.base}/metadata/endpoints?api-version=2022-09-01",
            "AZURE_AUTHORITY_HOST": service.base, "REQUESTS_CA_BUNDLE": str(ca), "SSL_CERT_FILE": str(ca),
            "AZUREML_CURRENT_CLOUD": CLOUD}


def connection(service: AzureMLService) -> dict:
    """The Airflow connection for this workspace: a service principal, as in production."""
    return {"conn_type": "azure", "login": CLIENT_ID, "password": service.client_secret,
            "extra": {"tenantId": TENANT, "subscriptionId": SUBSCRIPTION, "resource_group_name": RESOURCE_GROUP,
                      "workspace_name": WORKSPACE, "disable_instance_discovery": True}}


def main() -> None:
    p = argparse.ArgumentParser(description="The local Azure ML service as a process of its own")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--datastore", action="append", default=[], help="NAME=CONN_ID:CONTAINER")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--state", type=Path, required=True, help="folder for its CA and its address (service.json)")
    p.add_argument("--score-seconds", type=float,
                   help="every job runs exactly this long on its node, on warm nodes (the benchmark)")
    a = p.parse_args()
    stores = {n: tuple(v.split(":", 1)) for n, v in (d.split("=", 1) for d in a.datastore)}
    engine = JobService(stores, nodes=a.nodes, warm_nodes=a.score_seconds is not None)
    if a.score_seconds is not None:
        engine.add_rule({"behaviour": "timed", "score_seconds": a.score_seconds})
    # The service principal's secret: from the environment, never the command line (ps shows that).
    service = AzureMLService(engine, client_secret=os.environ.get(SECRET_ENV))
    _server, ca = serve(service, a.state, a.port)
    (a.state / "service.json").write_text(json.dumps({"base": service.base, "env": client_environment(service, ca),
                                                      "connection": connection(service)}))
    print(f"local Azure ML on {service.base}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
