"""The layers below the stages never import them: stages compose train/, evaluate/, data/,
deploy/ and serve/, not the other way round (one pod entry point, stages/pod.py, maps a stage
name to its training function)."""

from __future__ import annotations

import ast
from pathlib import Path

import trainpipe

PACKAGE = Path(trainpipe.__file__).parent
LOWER_LAYERS = ("train", "deploy", "evaluate", "data", "serve", "tune")


def stage_imports(source: str, module: str) -> list[str]:
    """Every import of trainpipe.stages in ``source`` of ``module`` (a dotted name), also
    inside functions and relative ones, as 'line: text'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                package = module.split(".")[: -node.level]
                base = ".".join([*package, *([node.module] if node.module else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(n == "trainpipe.stages" or n.startswith("trainpipe.stages.") for n in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_lower_layers_do_not_import_stages():
    modules = [p for layer in LOWER_LAYERS for p in sorted((PACKAGE / layer).rglob("*.py"))]
    assert len(modules) > 20  # the walk found the packages
    offenders = []
    for path in modules:
        dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        offenders += [f"{dotted}:{hit}" for hit in stage_imports(path.read_text(), dotted)]
    assert offenders == []


def test_the_check_sees_lazy_and_relative_imports():
    """Imports inside a function body (how the old train/worker.py did it) and relative ones
    are caught; the other layers' imports are not."""
    source = (
        "from trainpipe.data.stored import load_validated\n"
        "from ..evaluate import predict\n"
        "def f():\n"
        "    from trainpipe.stages import finetune\n"
        "    import trainpipe.stages.pod\n"
        "    from ..stages.context import run_prefix\n"
        "    from .. import stages\n"
    )
    hits = stage_imports(source, "trainpipe.train.probe")
    assert [h.split(": ", 1)[1] for h in hits] == [
        "from trainpipe.stages import finetune",
        "import trainpipe.stages.pod",
        "from ..stages.context import run_prefix",
        "from .. import stages",
    ]


def test_export_does_not_load_the_http_server():
    """Export builds ONNX Runtime sessions with the server's options (serve/model.py); that
    must not import the HTTP stack, which a training image need not run."""
    import subprocess
    import sys

    probe = (
        "import sys, trainpipe.export.onnx_export, trainpipe.serve.model; "
        "from trainpipe.serve import ServeConfig; "
        "print(sorted(m for m in ('uvicorn', 'starlette') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    from trainpipe.serve import start_in_background  # the entry points still load on use

    assert callable(start_in_background)
