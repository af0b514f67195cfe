"""The arrival-order strategy's first import path, kept for DAG versions serialized before 0.2
(see vidstyle.airflow.priority.FirstPathArrivalOrder); new DAGs name vidstyle.airflow.priority."""

from vidstyle.airflow.priority import FirstPathArrivalOrder as ArrivalOrder

__all__ = ["ArrivalOrder"]
