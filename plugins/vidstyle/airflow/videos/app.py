"""The Videos page's FastAPI app, mounted by the plugin at ``/videos`` in Airflow's API server.

Airflow does not protect a plugin's app: every route here depends on Airflow's own ``get_user``
(the JWT in the Authorization header or the UI's ``_token`` cookie) and asks the installation's
auth manager, through ``requires_access_dag``, for the permission the same act needs in Airflow:
reading ``video_stylize``'s runs to see videos, creating one to upload (an upload starts a run).
Re-styling is not here at all: the page triggers the run through Airflow's REST API itself, with
the trigger form's params, so Airflow's own checks apply. Storage is reached with the pipeline's
connection; the browser only ever gets a link for one blob, short-lived.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from functools import cache
from importlib import resources
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from vidstyle.airflow.videos.catalog import DAG_ID, STATES, Catalog
from vidstyle.hooks.blob_links import LinksUnavailable, allow_browser_uploads, read_link, upload_link
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.errors import BadInput
from vidstyle.pipeline.params import JobParams, check_params
from vidstyle.pipeline.settings import Settings, load_settings

PREFIX = "/videos"
STATIC = resources.files("vidstyle.airflow.videos") / "static"
CAN_READ = [Depends(requires_access_dag("GET", DagAccessEntity.RUN, DAG_ID))]
CAN_TRIGGER = [Depends(requires_access_dag("POST", DagAccessEntity.RUN, DAG_ID))]
VIDEO_ID = re.compile(r"[a-z0-9-]{1,80}")
NO_STORE = {"Cache-Control": "no-store"}  # links and states must never come from a cache

app = FastAPI(title="Videos (vidstyle)", docs_url=None, redoc_url=None, openapi_url=None)


@cache
def _settings() -> Settings:
    return load_settings()


@cache
def _store() -> BlobStore:
    settings = _settings()
    return BlobStore(settings.wasb_conn_id, settings.container)


@cache
def _cors_for_emulator() -> None:
    """Azurite (the local stack, compose, the tests) gets CORS for the page's uploads once per
    process; any origin, as the SAS is what grants access. On Azure the deployment sets it."""
    store = _store()
    if store.account_name == "devstoreaccount1":
        allow_browser_uploads(store, ["*"])


def _catalog() -> Catalog:
    return Catalog(_store(), _settings())


@app.exception_handler(HTTPException)
async def _signed_out_to_login(request: Request, exc: HTTPException) -> Response:
    """The page itself sends a signed-out browser to Airflow's sign-in; the API answers 401."""
    if exc.status_code == 401 and not request.url.path.startswith(f"{PREFIX}/api/"):
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


# ---- the page (static files need the signed-in reader too: nothing here is public) ----

@app.get("/", dependencies=CAN_READ, include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), headers=NO_STORE)


@app.get("/static/{name}", dependencies=CAN_READ, include_in_schema=False)
def static(name: str) -> FileResponse:
    if name not in {"videos.js", "videos.css"}:
        raise HTTPException(404, "no such file")
    return FileResponse(str(STATIC / name))


# ---- reading ----

@app.get("/api/videos", dependencies=CAN_READ)
def list_videos(cursor: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                state: str | None = None, style: str | None = None) -> JSONResponse:
    if state and state not in STATES.values():
        raise HTTPException(422, f"state must be one of {', '.join(sorted(STATES.values()))}")
    page = _catalog().page(cursor, limit, state or None, style or None)
    return JSONResponse({"videos": page.videos, "next_cursor": page.next_cursor, "total": page.total,
                         "dag_id": DAG_ID}, headers=NO_STORE)


@app.get("/api/videos/{video_id}", dependencies=CAN_READ)
def one_video(video_id: str) -> JSONResponse:
    if not VIDEO_ID.fullmatch(video_id):  # ids are an ASCII slug and a hash (vidstyle.pipeline.identity)
        raise HTTPException(404, "no such video")
    catalog = _catalog()
    video = catalog.get(video_id)
    if video is None:
        raise HTTPException(404, "no such video")
    try:
        for out in video["outputs"]:
            if out["state"] == "done":
                out["links"] = {k: read_link(catalog.store, out["paths"][k]).url for k in ("video", "preview")}
    except LinksUnavailable as exc:
        video["links_unavailable"] = str(exc)
    defaults = _settings()
    video["defaults"] = {"style": defaults.default_style, "output_prefix": defaults.output_prefix}
    return JSONResponse(video, headers=NO_STORE)


@app.get("/api/styles", dependencies=CAN_READ)
def styles() -> JSONResponse:
    return JSONResponse({"styles": _catalog().styles(), "default": _settings().default_style})


# ---- uploading ----

class UploadRequest(BaseModel):
    name: str
    size: int = 0


def upload_blob(name: str, settings: Settings) -> str:
    """The blob a user's file goes to: its name under the watched prefix, checked by the trigger
    form's own rules (vidstyle.pipeline.params) and then some a browser's name could break."""
    name = unicodedata.normalize("NFC", name)
    if (not name or len(name) > 255 or name != name.strip() or name.startswith(".")
            or any(ord(c) < 32 or c in '\\/:*?"<>|' for c in name)):
        raise BadInput(f"file name {name!r}: give a plain file name (no folders, no control characters, "
                       "none of \\ / : * ? \" < > |, not starting with '.' or a space)")
    blob = settings.input_prefix + name
    check_params(JobParams(video_blob=blob, style=settings.default_style, chunk_frames=None, output_height=0,
                           crf=0, output_prefix=settings.output_prefix, backend=settings.backend, keep_work=False),
                 settings)
    if posixpath.normpath(blob) != blob:
        raise BadInput(f"file name {name!r}: not a plain file name")
    return blob


@app.post("/api/uploads", dependencies=CAN_TRIGGER)
def start_upload(body: UploadRequest) -> JSONResponse:
    """A create/write-only link for the one blob the file goes to; an existing name is refused
    (an upload never replaces a video someone else sent)."""
    settings = _settings()
    try:
        blob = upload_blob(body.name, settings)
    except BadInput as exc:
        raise HTTPException(422, str(exc)) from None
    store = _store()
    if store.exists(blob):
        raise HTTPException(409, f"a video named {body.name!r} is there already: rename the file to send it again")
    _cors_for_emulator()
    try:
        link = upload_link(store, blob)
    except LinksUnavailable as exc:
        raise HTTPException(501, str(exc)) from None
    return JSONResponse({"blob": blob, "url": link.url, "expires": link.expires.isoformat(),
                         "block_bytes": 8 * 2**20}, headers=NO_STORE)


class UploadDone(BaseModel):
    blob: str


@app.post("/api/uploads/done", dependencies=CAN_TRIGGER)
def upload_done(body: UploadDone) -> JSONResponse:
    """The upload is in storage: where no Event Grid announces uploads (Azurite), the event is
    posted here exactly as ``vidstyle upload`` posts it; elsewhere Event Grid has done it. Returns
    the video's id, so the page can follow it into the list."""
    from vidstyle.pipeline.arrivals import announce, posts_events
    from vidstyle.pipeline.identity import current_video

    settings, store = _settings(), _store()
    try:
        blob = upload_blob(posixpath.basename(body.blob), settings)
    except BadInput as exc:
        raise HTTPException(422, str(exc)) from None
    if blob != body.blob:
        raise HTTPException(422, "not an upload of this page")
    try:
        video = current_video(store, blob)
    except FileNotFoundError:
        raise HTTPException(404, "the upload is not in storage") from None
    posted = posts_events(store, settings)
    if posted:
        announce(store, settings, blob)
    return JSONResponse({"video_id": video.video_id, "event_posted": posted})
