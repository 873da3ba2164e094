"""The house's structure, checked: seg_models' top level, no import cycle, and a task added through
the registry alone (test/toy_task.py) served by the CLI's export, build and bench."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('seg_models', 'seg_perception')


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob('*.py')):
            parts = list(path.relative_to(REPO_ROOT).with_suffix('').parts)
            if parts[-1] == '__init__':
                parts.pop()
            modules['.'.join(parts)] = path
    return modules


def _under_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            return True
    return False


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports anywhere (also inside functions; not for type checking)."""
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = set()
    for node in ast.walk(tree):
        if _under_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in known else node.module
                         for alias in node.names)
    return {name for name in found if name in known}


def test_no_module_imports_itself_through_others():
    modules = module_files()
    names = sorted(modules)
    index = {name: position for position, name in enumerate(names)}
    edges = [(index[name], index[target]) for name in names
             for target in imported_modules(modules[name], set(names)) if target != name]
    rows, columns = zip(*edges)
    graph = csr_matrix((np.ones(len(edges)), (rows, columns)), shape=(len(names), len(names)))
    count, labels = connected_components(graph, directed=True, connection='strong')
    cycles = [sorted(name for name, label in zip(names, labels) if label == component)
              for component in range(count) if np.count_nonzero(labels == component) > 1]
    assert len(edges) > 100  # the walk saw the real import graph
    assert cycles == [], f'import cycles: {cycles}'


def test_the_product_never_imports_ultralytics():
    """Ultralytics is AGPL-3.0: the tests use it to make real exports; the product only reads them."""
    importers = []
    for module, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split('.')[0] == 'ultralytics' for name in names):
                importers.append(module)
    assert not importers, importers


def test_seg_models_top_level_holds_only_subpackages_and_a_few_modules():
    top = REPO_ROOT / 'seg_models'
    modules = sorted(path.name for path in top.glob('*.py'))
    assert set(modules) - {'__init__.py', '__main__.py', 'cli.py'} <= {'configs.py', 'tasks.py'}, modules
    packages = sorted(path.name for path in top.iterdir() if (path / '__init__.py').is_file())
    assert packages == ['backends', 'bench', 'checkpoints', 'data', 'deploy', 'models', 'panoptic', 'segmenters',
                        'tracking', 'training']


def test_an_unknown_task_is_refused_naming_the_known_ones():
    from seg_models.tasks import get_task

    with pytest.raises(ValueError, match=r"unknown task 'depth'; known: semantic, instance"):
        get_task('depth')


@pytest.fixture
def toy_task(monkeypatch):
    """The toy task registered: one table entry, as a new task would add it to seg_models/tasks.py."""
    from toy_task import TOY_TASK

    from seg_models import tasks

    monkeypatch.setitem(tasks.TASKS, TOY_TASK.name, TOY_TASK)
    return TOY_TASK


def test_a_task_added_to_the_registry_is_served_by_export_build_and_bench(toy_task, tmp_path, capsys):
    from seg_models.cli import main

    assert main(['export', '--task', 'toy', '--input-size', '32', '48', '--output', str(tmp_path / 'toy.onnx')]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / 'toy.onnx'))
    images = np.zeros((2, 3, 32, 48), np.uint8)
    images[1] = 200
    class_ids = session.run(None, {'images': images})[0]
    assert class_ids.shape == (2, 32, 48) and class_ids[0].max() == 0 and class_ids[1].min() == 1

    assert main(['build', '--task', 'toy', '--backend', 'onnxruntime', '--input-size', '32', '48']) == 0
    assert main(['bench', '--task', 'toy', '--backends', 'pytorch', 'onnxruntime', '--iterations', '1',
                 '--warmup', '0', '--input-size', '32', '48']) == 0
    output = capsys.readouterr().out
    rows = [line for line in output.splitlines() if line.startswith(('pytorch', 'onnxruntime'))]
    assert len(rows) == 2, output
    assert all(re.search(r'itself under .*: \d+\.\d\d% identical pixels', row) for row in rows), output


def test_the_cli_describes_each_registered_task():
    result = subprocess.run([sys.executable, '-m', 'seg_models', 'export', '--help'], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    expected = ('semantic: DeepLabv3+', 'instance: Mask R-CNN')
    assert result.returncode == 0 and all(name in result.stdout for name in expected), result.stdout + result.stderr
