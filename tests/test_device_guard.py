"""CPU-side guards that the networks train on any device and precision (issue 16).

1. A static check of the training path: a torch tensor factory (``torch.zeros``, ``torch.rand``,
   ``torch.tensor``, ``torch.Generator``, ...) without ``device=`` makes a CPU tensor, which breaks a
   GPU fit (the detector's augmentation, assignment and NMS did). Each call in :data:`TRAINING_PATH`
   passes ``device=``, or says on its line ``# device: cpu on purpose — <reason>``. The checker is
   tested on snippets with violations, so that it can fail.
2. The detector's training step at run time on torch's ``meta`` device (CPU torch has no other
   non-CPU device): augmentation, both networks, the anchor grid and the target assignment run on
   ``meta`` until the loss's first data-dependent op (a boolean mask), which plain ``meta`` cannot
   run; under a fake-tensor mode (``torch._subclasses``, skipped where missing) the whole step runs.
   The backward pass is not run there (it needs the data-dependent sizes); it runs where the
   forward ran, which the GPU layer checks (tests/test_gpu.py).
3. Short fits of every kind's networks under ``DEEPFLOW_PRECISION=bf16-mixed`` on the CPU: the
   detector's loss and validation failed there as on a GPU before the fix.
4. The GPU layer's imports work without MLflow, Prefect, Great Expectations and DVC (the GPU
   image has none of them).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from deepflow import settings
from tests import device_members

ROOT = settings.PROJECT_ROOT
KINDS = ROOT / "src" / "deepflow" / "kinds"
# The modules a fit runs through on the accelerator: networks, systems, losses, augmentation, box
# operations, and the metric/scorer code a validation step calls. (src/deepflow/training.py, the
# Trainer's own module, draws its shuffle order on the CPU by design: the sampler's indices.)
TRAINING_PATH = [
    "detection/augment.py", "detection/boxes.py", "detection/loss.py", "detection/metrics.py",
    "detection/models.py", "detection/scorer.py", "detection/system.py",
    "tabular/models.py", "tabular/metrics.py",
    "table/models.py", "table/metrics.py",
    "text/models.py", "text/metrics.py",
]
# Module names of this kind, in any kind, are on the training path and must be listed above.
TRAINING_MODULE_NAMES = ("models.py", "system.py", "loss.py", "augment.py", "boxes.py")
# torch functions that make a new tensor (or generator) on the default device unless told otherwise.
# The *_like and Tensor.new_* families inherit their input's device and are not listed.
FACTORIES = frozenset({
    "zeros", "ones", "full", "empty", "empty_strided", "arange", "range", "linspace", "logspace", "eye",
    "rand", "randn", "randint", "randperm", "normal", "tensor", "as_tensor", "scalar_tensor", "from_numpy",
    "tril_indices", "triu_indices", "Generator",
})
OPT_OUT = re.compile(r"#\s*device:\s*cpu on purpose\s*(—|--|-)\s*\S")
BLOCKED = ("mlflow", "prefect", "great_expectations", "dvc")


def unplaced_factories(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line: torch.<name>(...) without device=`` for every tensor factory call of ``source``
    that names no device and has no opt-out comment on any of its lines."""
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    modules, names = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "torch"}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            names |= {a.asname or a.name: a.name for a in node.names if a.name in FACTORIES}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
            name = f.attr if f.attr in FACTORIES else None
        elif isinstance(f, ast.Name):
            name = names.get(f.id)
        else:
            name = None
        if name is None or any(k.arg == "device" for k in node.keywords):
            continue
        span = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
        if not any(OPT_OUT.search(line) for line in span):
            found.append(f"{filename}:{node.lineno}: torch.{name}(...) without device= "
                         f"(pass device=..., or add '# device: cpu on purpose — <reason>')")
    return found


# --- 1. the static check ------------------------------------------------------------------------


def test_the_checker_flags_factories_without_a_device() -> None:
    snippet = textwrap.dedent("""
        import torch
        import torch as T
        from torch import zeros as z, rand

        def f(x, g):
            a = torch.zeros(3)                               # flagged
            b = T.arange(4, dtype=torch.long)                # flagged: the alias
            c = z(2)                                         # flagged: imported by name
            d = rand(2, generator=g)                         # flagged
            e = torch.tensor([1.0],
                             dtype=x.dtype)                  # flagged: two lines
            h = torch.ones(2)  # device: cpu on purpose      # flagged: an opt-out gives a reason
            ok1 = torch.zeros(3, device=x.device)
            ok2 = torch.zeros_like(x) + x.new_ones(3)
            ok3 = torch.full((2,), 1.0)  # device: cpu on purpose — numpy comes next
            ok4 = torch.empty(0,
                              dtype=torch.long)  # device: cpu on purpose — the scorer's frame
            return torch.cat([a, b])
    """)
    found = unplaced_factories(snippet)
    assert [int(f.split(":")[1]) for f in found] == [7, 8, 9, 10, 11, 13], found
    assert "torch.arange" in found[1] and "torch.zeros" in found[2] and "torch.rand" in found[3]


def test_every_training_module_is_checked() -> None:
    on_disk = {str(p.relative_to(KINDS)) for p in KINDS.glob("*/*.py") if p.name in TRAINING_MODULE_NAMES}
    assert on_disk <= set(TRAINING_PATH), f"add to TRAINING_PATH: {sorted(on_disk - set(TRAINING_PATH))}"
    assert all((KINDS / p).is_file() for p in TRAINING_PATH), [p for p in TRAINING_PATH if not (KINDS / p).is_file()]


def test_training_path_tensor_factories_name_their_device() -> None:
    found = [f for p in TRAINING_PATH for f in unplaced_factories((KINDS / p).read_text(), f"kinds/{p}")]
    assert not found, "\n".join(found)


# --- 2. the detector's training step on the meta device ----------------------------------------

TARGETS = torch.tensor([[[0, 10.0, 12.0, 30.0, 28.0], [5, 40.0, 20.0, 48.0, 60.0], [-1, -1, -1, -1, -1]],
                        [[2, 0.0, 30.0, 60.0, 60.0], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]]])


def detector_system(name: str):
    from deepflow.kinds.detection.config import AugmentConfig, ModelConfig
    from deepflow.kinds.detection.models import build_net
    from deepflow.kinds.detection.system import DetectorSystem

    return DetectorSystem(build_net(name, 6, ModelConfig()), pd.DataFrame(), 64, list("abcdef"), lr=1e-3,
                          weight_decay=0.0, total_steps=2, augment_cfg=AugmentConfig(), box_weight=5.0,
                          iou_kind="ciou", seed=0)


def meta_step(name: str):
    """The training step on meta tensors (uint8 images, float targets), as Lightning calls it."""
    system = detector_system(name).to("meta")
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8, device="meta")
    return system, system.training_step((images, TARGETS.to("meta")), 0)


@pytest.mark.parametrize("name", ["shallow", "deep"])
def test_detector_step_runs_on_meta_up_to_the_losss_boolean_mask(name: str) -> None:
    from deepflow.kinds.detection.models import dense

    with pytest.raises(NotImplementedError, match="nonzero"):  # augment, net, grid, assign ran on meta
        meta_step(name)
    system = detector_system(name).to("meta")
    with torch.no_grad():  # validation's decoding too, before its one copy to the CPU
        found = dense(system.net(torch.zeros(2, 3, 64, 64, device="meta")), system.net.strides)
    assert found.device.type == "meta" and found.dtype == torch.float32 and found.shape[-1] == 5 + 6


def test_the_meta_step_catches_a_tensor_made_on_the_cpu(monkeypatch) -> None:
    """The pre-fix anchor grid (points built with torch.arange on the CPU) fails on meta."""
    from deepflow.kinds.detection import loss, models

    def cpu_grid(maps, strides):
        return models.grid([torch.empty(m.shape) for m in maps], strides)  # device: cpu on purpose — the bug

    monkeypatch.setattr(loss, "grid", cpu_grid)
    with pytest.raises(RuntimeError, match="device"):
        meta_step("shallow")
    monkeypatch.undo()
    from deepflow.kinds.detection import augment


    def cpu_draw(g, *shape, like):
        return torch.rand(*shape, generator=g)  # device: cpu on purpose — the pre-fix augmentation

    monkeypatch.setattr(augment, "draw", cpu_draw)
    with pytest.raises(RuntimeError, match="device"):
        meta_step("shallow")


@pytest.mark.parametrize("name", ["shallow", "deep"])
def test_detector_step_runs_whole_under_fake_meta_tensors(name: str) -> None:
    try:  # private torch API: skipped, not failed, where a torch version moves it
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv
    except ImportError as exc:
        pytest.skip(f"no fake tensors in this torch: {exc}")
    system = detector_system(name)
    with FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True):
        system = system.to("meta")
        images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8, device="meta")
        loss = system.training_step((images, TARGETS.to("meta")), 0)
    assert loss.device.type == "meta" and loss.dtype == torch.float32 and loss.requires_grad


# --- 3. bf16 on the CPU -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shallow", "deep"])
def test_detector_trains_and_validates_a_batch_in_bf16_on_the_cpu(name: str, monkeypatch) -> None:
    """Failed before the fix: the loss wrote float IoUs into a bf16 target, validation gave numpy bf16."""
    from deepflow import usecase
    from deepflow.usecases.traffic.generate import GenerateParams, generate

    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    monkeypatch.setenv("DEEPFLOW_PRECISION", "bf16-mixed")
    uc = usecase.get("traffic", ["model.img_size=64", "coco.enabled=false"])
    splits = generate(GenerateParams(n_train=8, n_val=4, n_test=0, width=64, height=64, seed=3))
    scorer, info = uc.fit(name, "candidate", splits, fast_dev_run=True)
    assert info["steps"] == 1 and next(scorer.net.parameters()).dtype == torch.float32


@pytest.mark.slow  # every network of every kind, two short epochs each: about 30 s on two cores
@pytest.mark.parametrize(("entry", "member"), [
    ("fraud", "shallow"), ("fraud", "deep"), ("fraud", "autoencoder"), ("fraud", "sequence"),
    ("nlp", "shallow"), ("nlp", "deep"), ("traffic", "shallow"), ("traffic", "deep"),
    ("table", "shallow"), ("table", "deep")])
def test_every_network_fits_in_bf16_on_the_cpu(entry: str, member: str) -> None:
    fitted = device_members.fit(entry, member, "cpu", "bf16-mixed")
    assert fitted.devices and set(fitted.devices) == {"cpu"} and set(fitted.precisions) == {"bf16-mixed"}
    assert device_members.finite(fitted.metric), fitted


def test_the_bf16_list_is_every_network_member() -> None:
    params = next(m for m in test_every_network_fits_in_bf16_on_the_cpu.pytestmark if m.name == "parametrize")
    assert set(params.args[1]) == set(device_members.members())


# --- 4. the GPU layer imports without the platform services --------------------------------------

GPU_LAYER_IMPORTS = ["tests.conftest", "tests.device_members", "tests.test_gpu", "deepflow.kinds.detection.usecase",
                     "deepflow.kinds.text.usecase", "deepflow.kinds.tabular.usecase", "deepflow.kinds.table.usecase",
                     "deepflow.kinds.detection.system", "deepflow.kinds.text.models", "deepflow.kinds.table.models",
                     "deepflow.usecases.fraud.prepare", "deepflow.usecases.traffic.generate",
                     "deepflow.kinds.text.prepare", "tests.test_table_models"]


def blocked_python(code: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing MLflow, Prefect, Great Expectations or
    DVC fails (``sys.modules[name] = None``), from the project root with src/ on the path."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in BLOCKED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_blocker_blocks() -> None:
    done = blocked_python("import mlflow", timeout=60)
    assert done.returncode != 0 and "mlflow" in done.stderr


def module_imports(name: str) -> set[str]:
    """What module ``name`` (a file of src/ or tests/) imports when it loads: the imports outside
    functions and classes' methods, as full module names (``from a import b`` gives ``a`` and ``a.b``)."""
    path = next((p for p in (ROOT / "src" / Path(*name.split(".")), ROOT / Path(*name.split(".")))
                 for p in (p.with_suffix(".py"), p / "__init__.py") if p.is_file()), None)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.ClassDef):
                visit([n for n in node.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)])
    visit(tree.body)
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return found | parents


def loaded_with(roots: list[str]) -> dict[str, str]:
    """Every module the ``roots`` load, transitively through the project's own modules: {module: who}."""
    seen, todo = {r: "" for r in roots}, list(roots)
    while todo:
        name = todo.pop()
        for dep in module_imports(name):
            if dep not in seen:
                seen[dep] = name
                if dep.split(".")[0] in ("deepflow", "tests"):
                    todo.append(dep)
    return seen


def test_the_import_walk_finds_a_blocked_import(tmp_path, monkeypatch) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "a.py").write_text("import os\nfrom tests import b\ndef f():\n    import dvc\n")
    (tmp_path / "tests" / "b.py").write_text("try:\n    import mlflow.pyfunc\nexcept ImportError:\n    pass\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    seen = loaded_with(["tests.a"])
    assert seen["mlflow"] == "tests.b" and "dvc" not in seen  # dvc: only inside a function


def test_the_gpu_layer_loads_no_mlflow_prefect_great_expectations_dvc() -> None:
    """Static and fast: the modules the GPU layer imports never import the platform services when
    they load. (The slow test below imports and fits for real with those imports blocked.)"""
    seen = loaded_with(GPU_LAYER_IMPORTS)
    hits = {m: who for m, who in seen.items() if m.split(".")[0] in BLOCKED}
    assert not hits, f"imported when loading (module: by whom): {hits}"
    assert "deepflow.training" in seen and "lightning" in seen  # the walk reaches the fit


@pytest.mark.slow  # a fresh interpreter imports Lightning (3 to 11 s here) and fits one network per kind
def test_the_gpu_layer_imports_and_fits_without_mlflow_prefect_great_expectations_dvc() -> None:
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in GPU_LAYER_IMPORTS)
    code += textwrap.dedent("""
        from tests import device_members as dm
        for entry, member in [("fraud", "shallow"), ("nlp", "shallow"), ("traffic", "shallow"), ("table", "shallow")]:
            fitted = dm.fit(entry, member, "cpu")
            assert dm.finite(fitted.metric), fitted
            print(entry, member, fitted.metric_name, fitted.metric)
    """)
    code += f"print(sorted(m for m in {BLOCKED!r} if sys.modules.get(m) is not None))\n"
    done = blocked_python(code, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[-1] == "[]", done.stdout
