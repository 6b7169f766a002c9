"""The ``tabular`` kind: tabular data: one row per example, numeric features, a binary label."""

from deepflow.kinds import Parts

PARTS = Parts(
    kind="tabular",
    usecase="deepflow.kinds.tabular.usecase:TabularUseCase",
    config="deepflow.kinds.tabular.config:TabularConfig",
    serving="deepflow.kinds.tabular.serving",
    batch="deepflow.kinds.tabular.batch",
    drift="deepflow.kinds.tabular.drift",
)
