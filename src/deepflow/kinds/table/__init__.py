"""The ``table`` kind: any table a user brings (CSV, TSV, JSON lines, Parquet), raw columns in.

``deepflow new NAME --data PATH`` infers the target, the task (binary, multiclass, regression)
and every column's role, and writes the entry; nothing here is written per dataset. The other
tabular kind, ``tabular``, is for prepared numeric features with a hand-written contract and a
binary label (engineered features from an entry's own prepare stage).
"""

from deepflow.kinds import Parts

PARTS = Parts(
    kind="table",
    usecase="deepflow.kinds.table.usecase:TableUseCase",
    config="deepflow.kinds.table.config:TableConfig",
    serving="deepflow.kinds.table.serving",
    batch="deepflow.kinds.table.batch",
    drift="deepflow.kinds.table.drift",
)
