"""The Airflow plugin (entry point ``airflow.plugins``): what Airflow must know by name, the
arrival-order priority of processing tasks, under its current and its first import path."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from vidstyle.airflow.priority import ArrivalOrder, FirstPathArrivalOrder


class VidstylePlugin(AirflowPlugin):
    name = "vidstyle"
    priority_weight_strategies: ClassVar[list] = [ArrivalOrder, FirstPathArrivalOrder]
