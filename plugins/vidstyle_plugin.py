"""Registers what Airflow must know by name: the arrival-order priority of processing tasks."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from vidstyle.priority import ArrivalOrder


class VidstylePlugin(AirflowPlugin):
    name = "vidstyle"
    priority_weight_strategies: ClassVar[list] = [ArrivalOrder]
