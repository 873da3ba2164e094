"""package.xml declares what the code imports, so that `rosdep install` on a real ROS install leaves nothing out.

Every module imported by seg_perception/, seg_models/, launch/ and test/ (at module level or inside functions,
found with ast) that is neither the standard library nor ours must have an entry in DEPENDENCIES below: its
rosdep keys, which package.xml must declare (exec_depend for what the package imports, test_depend for what
only the tests import), or the reason it comes from pip alone or is optional. Keys are those of ros/rosdistro's
rosdep database (rosdep/python.yaml, rosdep/base.yaml); ROS packages are keys by their own names."""
import ast
import re
import sys
from pathlib import Path
from typing import NamedTuple

from catkin_pkg.package import parse_package

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIRS = ('seg_perception', 'seg_models', 'launch')
TEST_DIR = 'test'
OWN_MODULES = {'seg_perception', 'seg_models'} | {path.stem for folder in (TEST_DIR, 'scripts')
                                                  for path in (REPO_ROOT / folder).glob('*.py')}


class Source(NamedTuple):
    """Where an imported module comes from on a ROS install."""

    keys: tuple[str, ...] = ()  # rosdep keys that install it
    pip: str = ''  # else the distribution requirements*.txt installs, rosdep having no key for it
    why: str = ''  # why it is pip only, or optional
    optional: bool = False  # imported only where installed; nothing installs it


def rosdep(*keys: str) -> Source:
    return Source(keys=keys)


def pip_only(distribution: str, why: str) -> Source:
    return Source(pip=distribution, why=why)


def optional(why: str) -> Source:
    return Source(optional=True, why=why)


# Import name (a top-level module, or a dotted module that needs more than its top-level package) -> source.
# Pip keys are python3-NAME-pip entries of rosdep/python.yaml; python3-rosbags-pip was added by
# ros/rosdistro#37795.
DEPENDENCIES: dict[str, Source] = {
    # ROS 2 packages
    'rclpy': rosdep('rclpy'),
    'builtin_interfaces': rosdep('builtin_interfaces'),
    'diagnostic_msgs': rosdep('diagnostic_msgs'),
    'lifecycle_msgs': rosdep('lifecycle_msgs'),
    'rcl_interfaces': rosdep('rcl_interfaces'),
    'rosgraph_msgs': rosdep('rosgraph_msgs'),
    'sensor_msgs': rosdep('sensor_msgs'),
    'std_msgs': rosdep('std_msgs'),
    'seg_perception_msgs': rosdep('seg_perception_msgs'),
    'cv_bridge': rosdep('cv_bridge'),
    'ament_index_python': rosdep('ament_index_python'),
    'launch': rosdep('launch'),
    'launch_ros': rosdep('launch_ros'),
    'launch_testing': rosdep('launch_testing'),
    # Python modules packaged by Debian and Ubuntu
    'numpy': rosdep('python3-numpy'),
    'cv2': rosdep('python3-opencv'),
    'PIL': rosdep('python3-pil'),
    'yaml': rosdep('python3-yaml'),
    'matplotlib': rosdep('python3-matplotlib'),
    'tqdm': rosdep('python3-tqdm'),
    'scipy': rosdep('python3-scipy'),
    'pytest': rosdep('python3-pytest'),
    'catkin_pkg': rosdep('python3-catkin-pkg-modules'),
    # Python modules rosdep installs with pip: python3-pytorch-pip is torch and torchvision from PyPI (the
    # apt keys python3-torch and python3-torchvision have no Ubuntu 24.04 package behind them)
    'torch': rosdep('python3-pytorch-pip'),
    'torchvision': rosdep('python3-pytorch-pip'),
    'onnxruntime': rosdep('python3-onnxruntime-pip'),
    'simplejpeg': rosdep('python3-simplejpeg-pip'),
    'rosbags': rosdep('python3-rosbags-pip'),
    # From pip alone (requirements.txt, requirements-no-deps.txt); package.xml's comment names each
    'onnx': pip_only('onnx', 'no key in rosdep'),
    'onnxslim': pip_only('onnxslim', 'no key in rosdep'),
    'safetensors': pip_only('safetensors', 'no key in rosdep'),
    'huggingface_hub': pip_only('huggingface-hub', 'no key in rosdep; hf:// named checkpoints'),
    'httpx2': pip_only('httpx2', "no key in rosdep; huggingface_hub's HTTP library, whose errors the fetch catches"),
    'cityscapesscripts': pip_only('cityscapesscripts', 'no key in rosdep'),
    'trackeval': pip_only('trackeval', 'no key in rosdep; installed without its dependencies'),
    'pycocotools': pip_only('pycocotools', "no key in rosdep; the RLE masks of TrackEval's MOTS evaluation"),
    'ray': pip_only('ray', 'no key in rosdep (nor for the pandas and pyarrow of Ray Data beside it)'),
    'modelopt': pip_only('nvidia-modelopt', 'no key in rosdep; installed without its dependencies'),
    'torch.utils.tensorboard': pip_only(
        'tensorboard', 'only python-tensorboard-pip, a Python 2 era key rosdistro is retiring; no python3 key'),
    'ultralytics': pip_only('ultralytics', 'test only (AGPL-3.0): the YOLO-seg models the tests compare with; '
                                           'no key in rosdep, and the product never imports it'),
    'transformers': pip_only('transformers', 'test only: a SegFormer built from a config; no key in rosdep'),
    # Optional
    'tensorrt': optional('NVIDIA TensorRT, imported only where installed; the TensorRT backend reports itself '
                         'unavailable otherwise'),
}

# Declared in package.xml though no module imports them: key -> why.
NOT_IMPORTED = {
    'launch_testing_ros': 'ROS support for the launch tests (test/test_driving_launch.py) under launch_test and '
                          'pytest on a ROS install',
}


def imported_modules(path: Path) -> set[str]:
    """The absolute imports of one file: `import a.b` gives a.b, `from a.b import c` gives a.b and a.b.c,
    and importlib.import_module('x') or __import__('x') with a literal name gives x."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names if alias.name != '*')
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ('importlib.import_module', '__import__')):
            names.add(node.args[0].value)
    return names


def third_party_imports() -> dict[str, dict[str, set[str]]]:
    """{'runtime' | 'test': {imported module: files that import it}} without the standard library and ours."""
    found: dict[str, dict[str, set[str]]] = {'runtime': {}, 'test': {}}
    for kind, folders in (('runtime', RUNTIME_DIRS), ('test', (TEST_DIR,))):
        for folder in folders:
            for path in sorted((REPO_ROOT / folder).rglob('*.py')):
                for name in imported_modules(path):
                    top = name.split('.')[0]
                    if top not in sys.stdlib_module_names and top not in OWN_MODULES:
                        found[kind].setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def sources_of(module: str) -> list[tuple[str, Source]]:
    """The table's entries for an imported module: its top-level name's, and any dotted entry it is in."""
    return [(name, source) for name, source in DEPENDENCIES.items()
            if module == name or module.startswith(name + '.')]


def needed_keys() -> tuple[dict[str, str], dict[str, str]]:
    """Keys that package.xml must declare: (exec {key: a file needing it}, test {key: a file needing it}); a
    key needed at runtime is exec only."""
    imports = third_party_imports()
    needed: dict[str, dict[str, str]] = {'runtime': {}, 'test': {}}
    for kind, modules in imports.items():
        for module, files in sorted(modules.items()):
            for _, source in sources_of(module):
                for key in source.keys:
                    needed[kind].setdefault(key, f'{module!r} imported by {min(files)}')
    test_only = {key: why for key, why in needed['test'].items() if key not in needed['runtime']}
    return needed['runtime'], test_only


def package():
    return parse_package(str(REPO_ROOT / 'package.xml'))


def test_every_third_party_import_has_an_entry_in_the_table():
    missing = []
    for modules in third_party_imports().values():
        for module, files in sorted(modules.items()):
            top = module.split('.')[0]
            if top not in DEPENDENCIES:
                missing.append(f'{top!r}, imported by {", ".join(sorted(files))}')
    assert not missing, (
        'imports that test/test_packaging.py DEPENDENCIES does not cover (find the rosdep key in ros/rosdistro '
        'rosdep/python.yaml or base.yaml, declare it in package.xml and add it to the table; or add a pip_only '
        'or optional entry with the reason):\n  ' + '\n  '.join(sorted(set(missing))))


def test_package_xml_declares_the_rosdep_key_of_every_import():
    xml = package()
    exec_declared = {dependency.name for dependency in xml.exec_depends}
    test_declared = {dependency.name for dependency in xml.test_depends}
    exec_needed, test_needed = needed_keys()
    problems = [f'package.xml lacks <exec_depend>{key}</exec_depend>: {why}'
                for key, why in sorted(exec_needed.items()) if key not in exec_declared]
    problems += [f'package.xml lacks <test_depend>{key}</test_depend>: {why} (tests only)'
                 for key, why in sorted(test_needed.items()) if key not in test_declared]
    assert not problems, '\n'.join(problems)


def test_package_xml_declares_nothing_the_code_does_not_need():
    xml = package()
    exec_needed, test_needed = needed_keys()
    problems = [f'<exec_depend>{dependency.name}</exec_depend>: no runtime module imports it'
                + (' (only tests do: make it a test_depend)' if dependency.name in test_needed else '')
                for dependency in xml.exec_depends
                if dependency.name not in exec_needed and dependency.name not in NOT_IMPORTED]
    problems += [f'<test_depend>{dependency.name}</test_depend>: '
                 + ('the package itself imports it: make it an exec_depend' if dependency.name in exec_needed
                    else 'no test imports it')
                 for dependency in xml.test_depends
                 if dependency.name not in test_needed and dependency.name not in NOT_IMPORTED]
    assert not problems, 'package.xml:\n' + '\n'.join(problems)


def test_every_table_entry_is_still_imported():
    imported = {module for modules in third_party_imports().values() for module in modules}
    stale = [name for name in DEPENDENCIES if not any(m == name or m.startswith(name + '.') for m in imported)]
    assert not stale, f'DEPENDENCIES entries no code imports any more (drop them, and their keys): {stale}'


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', line.split('#')[0])
        if match:
            names.add(re.sub(r'[-_.]+', '-', match.group(1)).lower())
    return names


def test_pip_only_modules_come_from_the_requirements_and_package_xml_says_so():
    requirements = (requirement_names(REPO_ROOT / 'requirements.txt')
                    | requirement_names(REPO_ROOT / 'requirements-no-deps.txt'))
    comments = ' '.join(re.findall(r'<!--(.*?)-->', (REPO_ROOT / 'package.xml').read_text(), re.S))
    problems = []
    for name, source in DEPENDENCIES.items():
        assert sum((bool(source.keys), bool(source.pip), source.optional)) == 1, f'{name}: {source}'
        assert source.keys or source.why, f'DEPENDENCIES[{name!r}] needs the reason it has no rosdep key'
        if source.pip and source.pip not in requirements:
            problems.append(f'{source.pip} ({name}) is in no requirements*.txt')
        if (source.pip or source.optional) and not re.search(rf'\b{re.escape(source.pip or name)}\b', comments):
            problems.append(f'package.xml\'s comments do not name {source.pip or name} as pip only or optional')
    assert not problems, '\n'.join(problems)


def test_package_xml_is_valid_format_3_for_ament_python():
    xml = package()  # parse_package validates: name, version, maintainer, license, dependency tags
    assert xml.package_format == 3
    assert xml.name == 'seg_perception'
    assert xml.get_build_type() == 'ament_python'


def test_license_file_matches_package_xml():
    license_file = REPO_ROOT / 'LICENSE'
    assert license_file.is_file(), 'LICENSE is missing at the repository root'
    licenses = [str(license_) for license_ in package().licenses]
    assert licenses == ['Apache-2.0'], f'package.xml names {licenses}, LICENSE holds the Apache License 2.0'
    head = ' '.join(license_file.read_text().split('\n')[:5])
    assert 'Apache License' in head and 'Version 2.0' in head, f'LICENSE does not start as Apache-2.0: {head!r}'
