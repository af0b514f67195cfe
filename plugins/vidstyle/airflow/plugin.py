"""The Airflow plugin (entry point ``airflow.plugins``): what Airflow must know by name, the
arrival-order priority of processing tasks, under its current and its first import path, and
the Videos page (its app mounted at ``/videos`` in the API server, its entry in the navigation)."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from vidstyle.airflow.priority import ArrivalOrder, FirstPathArrivalOrder


class _VideosApp:
    """The app, imported when read: the API server reads it; the scheduler, triggerer and workers
    load this plugin for its priority strategies only and never import the page's routes."""

    def __get__(self, obj: object, owner: type) -> list[dict]:
        from vidstyle.airflow.videos.app import PREFIX, app

        return [{"app": app, "url_prefix": PREFIX, "name": "Videos"}]


class VidstylePlugin(AirflowPlugin):
    name = "vidstyle"
    priority_weight_strategies: ClassVar[list] = [ArrivalOrder, FirstPathArrivalOrder]
    fastapi_apps = _VideosApp()
    # Shown in Airflow's navigation; the UI frames the page (same origin: the sign-in cookie goes along).
    external_views: ClassVar[list] = [{"name": "Videos", "href": "/videos/", "url_route": "videos",
                                       "destination": "nav", "nav_top_level": True}]
