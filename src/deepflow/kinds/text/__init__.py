"""The ``text`` kind: text classification: a text column and a label."""

from deepflow.kinds import Parts

PARTS = Parts(
    kind="text",
    usecase="deepflow.kinds.text.usecase:TextUseCase",
    config="deepflow.kinds.text.config:TextConfig",
    serving="deepflow.kinds.text.serving",
    batch="deepflow.kinds.text.batch",
    drift="deepflow.kinds.text.drift",
)
