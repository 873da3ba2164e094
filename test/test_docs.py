"""The documentation stays true: README.md and docs/ against the code they describe.

* docs/parameters.md is what ``python -m seg_perception.runtime.parameter_docs`` renders, and lists
  exactly the parameters each node declares;
* the commands in fenced blocks whose first line is ``# checked by test/test_docs.py`` run (in a
  scratch folder, with the source tree first on PYTHONPATH, as conftest sets it);
* every option of every documented command of our CLIs is one its ``--help`` lists, every launch
  argument one the launch file declares, every ``ros2 run ... -p NAME:=`` a parameter of that node;
* every relative link points to an existing file and heading, every repository path and module
  named in inline code exists.
"""
import functools
import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([REPO_ROOT / 'README.md', *(REPO_ROOT / 'docs').rglob('*.md')])
CHECKED_MARKER = '# checked by test/test_docs.py'
COMMAND_TIMEOUT_SEC = 300

FENCE = re.compile(r'^```([^\n]*)\n(.*?)^```[ \t]*$', re.MULTILINE | re.DOTALL)  # (language, text)
INDENTED_BLOCK = re.compile(r'(?:(?<=\n\n)|\A)(?:(?: {4}|\t).*(?:\n|$))+')  # after a blank line, as in markdown
INLINE_CODE = re.compile(r'`([^`\n]+)`')
LINK = re.compile(r'(?<!!)\[([^\]\n]*)\]\(([^)\s]+)\)')
HEADING = re.compile(r'^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$', re.MULTILINE)
MESSAGE_TYPE = re.compile(r'^seg_perception_msgs/([A-Z]\w*)$')  # a message type, named as ROS names it
REPO_PATH = re.compile(r'^(?:seg_models|seg_perception|seg_perception_msgs|config|launch|scripts|test|docs|\.ci)/'
                       r'[\w./*-]*$')
MODULE_NAME = re.compile(r'^(?:seg_models|seg_perception)(?:\.\w+)+$')

# Our command lines as the docs write them -> the command whose --help lists their options, and
# whether they take a subcommand (whose own --help is asked).
PROGRAMS = (
    (('seg-models',), ('seg-models',), True),
    (('python', '-m', 'seg_models'), ('seg-models',), True),
    (('seg_bag',), ('seg_bag',), True),
    (('python', '-m', 'seg_perception.evaluation'), ('seg_bag',), True),
    (('run_pipeline',), ('run_pipeline',), False),
    (('python', '-m', 'seg_perception.bringup.runner'), ('run_pipeline',), False),
    (('./scripts/demo.sh',), ('run_pipeline',), False),  # demo.sh passes its arguments to run_pipeline
    (('python', '-m', 'seg_perception.tools.benchmarks'), ('python', '-m', 'seg_perception.tools.benchmarks'), True),
    (('python', '-m', 'seg_perception.runtime.parameter_docs'),
     ('python', '-m', 'seg_perception.runtime.parameter_docs'), False),
)
SEPARATORS = {'&&', '||', ';', '|', '&'}


def _prose(text: str) -> str:
    """The text without fenced and indented code blocks (links and inline code live in prose)."""
    return INDENTED_BLOCK.sub('', FENCE.sub('', text))


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def checked_blocks() -> list[tuple[str, str]]:
    """(where, script) of every fenced block marked to be run."""
    blocks = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            lines = match.group(2).strip().splitlines()
            if lines and lines[0].strip() == CHECKED_MARKER:
                line = text.count('\n', 0, match.start()) + 1
                blocks.append((f'{_relative(path)}:{line}', '\n'.join(lines[1:])))
    return blocks


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, tokens) of every shell command in the docs: lines of code blocks but ```text ones
    (continuations joined, comments dropped) and inline code, split at && ; | into single commands."""
    found = []
    for path in DOCS:
        text = path.read_text()
        snippets = [match.group(2) for match in FENCE.finditer(text) if match.group(1).strip() != 'text']
        snippets += [match.group(0) for match in INDENTED_BLOCK.finditer(FENCE.sub('', text))]
        lines = [line for snippet in snippets for line in snippet.replace('\\\n', ' ').splitlines()]
        lines += INLINE_CODE.findall(_prose(text))
        for line in lines:
            try:
                lexer = shlex.shlex(line, posix=True, punctuation_chars=';&|')
                lexer.whitespace_split = True
                lexer.commenters = '#'
                tokens = list(lexer)
            except ValueError:  # not a shell line (prose in code, an unbalanced quote)
                continue
            command = []
            for token in tokens + [';']:
                if token in SEPARATORS:
                    if command:
                        found.append((f'{_relative(path)}: {line.strip()}', command))
                    command = []
                else:
                    command.append(token)
    return found


@functools.lru_cache(maxsize=None)
def help_text(command: tuple[str, ...]) -> str:
    done = subprocess.run([*command, '--help'], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SEC,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, f'{" ".join(command)} --help failed:\n{done.stdout}\n{done.stderr}'
    return done.stdout


def _invocation(tokens: list[str]):
    """(command with its subcommand, its arguments) when ``tokens`` run one of our CLIs, else None."""
    for prefix, command, has_subcommand in PROGRAMS:
        if tuple(tokens[:len(prefix)]) == prefix:
            arguments = tokens[len(prefix):]
            if has_subcommand and arguments and not arguments[0].startswith('-'):
                return command + (arguments[0],), arguments[1:]
            return command, arguments
    return None


def documented_invocations() -> dict[tuple[str, ...], dict[str, str]]:
    """For each of our commands (with its subcommand) the options the docs give it: option -> where."""
    invocations: dict[tuple[str, ...], dict[str, str]] = {}
    for where, tokens in command_lines():
        invocation = _invocation(tokens)
        if invocation is not None:
            command, arguments = invocation
            options = invocations.setdefault(command, {})
            for argument in arguments:
                if argument.startswith('--') and argument != '--help' and len(argument) > 2:
                    options.setdefault(argument.split('=', 1)[0], where)
    return invocations


def test_parameter_reference_is_up_to_date():
    from seg_perception.runtime.parameter_docs import REGENERATE, render

    reference = REPO_ROOT / 'docs' / 'parameters.md'
    assert reference.is_file() and reference.read_text() == render(), \
        f'docs/parameters.md is out of date with the parameter tables; regenerate it: {REGENERATE}'


def test_parameter_reference_check_flag_fails_on_a_stale_file(tmp_path, capsys):
    from seg_perception.runtime.parameter_docs import REGENERATE, main

    stale = tmp_path / 'parameters.md'
    stale.write_text('# Parameters\n')
    assert main(['--check', str(stale)]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert main(['--check', str(REPO_ROOT / 'docs' / 'parameters.md')]) == 0


def test_parameter_reference_lists_exactly_what_each_node_declares():
    """The reference assembles each node's tables as the node declares them: built here (autostart
    off, so no model is loaded), each node has exactly those parameters, in that order."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from seg_perception.bringup.driving_pipeline import DRIVING_PIPELINE
    from seg_perception.nodes.image_source import ImageSourceNode
    from seg_perception.runtime.parameter_docs import node_parameters

    documented = {node.node: [spec.name for table in node.tables for spec in table.specs]
                  for node in node_parameters()}
    context = Context()
    rclpy.init(context=context)
    try:
        builders = [lambda node_type=pipeline_node.node_type(): node_type(autostart=False, context=context)
                    for pipeline_node in DRIVING_PIPELINE] + [lambda: ImageSourceNode(context=context)]
        bare = Node('bare', context=context)
        implicit = set(bare._parameters)  # what rclpy declares on every node (use_sim_time ...)
        bare.destroy_node()
        for build in builders:
            node = build()
            try:
                declared = [name for name in node._parameters if name not in implicit]
                assert declared == documented[node.get_name()], node.get_name()
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert documented['instance_listener'] == []


def test_the_docs_mark_commands_to_check():
    wheres = [where.split(':')[0] for where, _ in checked_blocks()]
    assert 'README.md' in wheres
    assert any(where.startswith('docs/') for where in wheres)


@pytest.mark.slow
@pytest.mark.parametrize('where, script', checked_blocks(), ids=[where for where, _ in checked_blocks()])
def test_checked_commands_run(where, script, tmp_path):
    done = subprocess.run(['bash', '-c', 'set -euo pipefail\n' + script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_SEC, env=os.environ.copy())
    assert done.returncode == 0, f'{where}: the documented commands failed\n{script}\n{done.stdout}\n{done.stderr}'


def _takes(command: tuple[str, ...], option: str) -> bool:
    return re.search(rf'(?<![\w-]){re.escape(option)}(?![\w-])', help_text(command)) is not None


@pytest.mark.slow
def test_every_documented_option_is_one_the_command_takes():
    """Options in documented command lines are checked against that command's --help; an option
    named on its own in prose (`--rate 1`) against the commands its page runs."""
    invocations = documented_invocations()
    assert ('seg-models', 'build') in invocations and ('seg_bag', 'replay') in invocations
    with ThreadPoolExecutor(max_workers=4) as pool:  # each --help starts a Python: ask them side by side
        list(pool.map(help_text, [command for command, options in invocations.items() if options]))
    unknown = [f'{where}: {option} (not in `{" ".join(command)} --help`)'
               for command, options in sorted(invocations.items())
               for option, where in options.items() if not _takes(command, option)]
    page_commands: dict[str, set] = {}
    for where, tokens in command_lines():
        invocation = _invocation(tokens)
        if invocation is not None:
            page_commands.setdefault(where.split(':')[0], set()).add(invocation[0])
    for path in DOCS:
        page = _relative(path)
        commands = page_commands.get(page) or set(invocations)
        for code in INLINE_CODE.findall(_prose(path.read_text())):
            option = code.split()[0].split('=', 1)[0]
            if option in ('--ros-args', '--help') or not option.startswith('--'):
                continue
            if not any(_takes(command, option) for command in commands):
                unknown.append(f'{page}: {option} (taken by none of the commands this page runs)')
    assert not unknown, 'documented options the commands do not take:\n' + '\n'.join(unknown)


def test_documented_launch_arguments_and_node_parameters_exist(monkeypatch):
    from launch_recorder import DeclareLaunchArgument, load_launch_file
    from seg_perception.runtime.parameter_docs import node_parameters

    launch_file = load_launch_file(REPO_ROOT / 'launch' / 'driving.launch.py', monkeypatch)
    arguments = {entity.name for entity in launch_file.generate_launch_description().entities
                 if isinstance(entity, DeclareLaunchArgument)}
    scripts = set(re.findall(r"'([\w-]+) = (?:seg_perception|seg_models)\.", (REPO_ROOT / 'setup.py').read_text()))
    parameters = {executable: {spec.name for table in node.tables for spec in table.specs}
                  for node in node_parameters() for executable in node.executables}
    assert set(parameters) <= scripts, 'the parameter reference names executables setup.py does not install'
    wrong = []
    for where, tokens in command_lines():
        if tokens[:4] == ['ros2', 'launch', 'seg_perception', 'driving.launch.py']:
            wrong += [f'{where}: launch argument {token.split(":=")[0]}' for token in tokens[4:]
                      if ':=' in token and token.split(':=')[0] not in arguments]
        if tokens[:2] == ['ros2', 'run'] and len(tokens) > 3 and tokens[2] == 'seg_perception':
            executable = tokens[3]
            if executable not in scripts:
                wrong.append(f'{where}: executable {executable}')
            given = [value.split(':=')[0] for flag, value in zip(tokens, tokens[1:]) if flag == '-p']
            wrong += [f'{where}: parameter {name} of {executable}' for name in given
                      if executable in parameters and name not in parameters[executable]]
    assert not wrong, 'the docs name what does not exist:\n' + '\n'.join(wrong)


def github_anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a markdown file (lower case, punctuation dropped,
    spaces to hyphens, repeats numbered)."""
    anchors, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub('', path.read_text())):
        text = LINK.sub(r'\1', heading)
        slug = re.sub(r'[^\w\- ]', '', text.lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f'{slug}-{count}')
    return anchors


def test_every_relative_link_points_to_a_file_and_heading():
    broken = []
    for path in DOCS:
        for _, target in LINK.findall(_prose(path.read_text())):
            if re.match(r'^[a-z]+:', target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition('#')
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f'{_relative(path)}: {target} (no such file)')
            elif anchor and (linked.suffix != '.md' or anchor not in github_anchors(linked)):
                broken.append(f'{_relative(path)}: {target} (no such heading)')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def _module_exists(name: str) -> bool:
    """``name`` is one of our modules or packages, or an attribute defined at the top of one."""
    parts = name.split('.')
    for length in range(len(parts), 0, -1):
        base = REPO_ROOT.joinpath(*parts[:length])
        source = base.with_suffix('.py') if base.with_suffix('.py').is_file() else base / '__init__.py'
        if source.is_file():
            rest = parts[length:]
            return not rest or (len(rest) == 1 and re.search(rf'^(?:def |class )?{rest[0]}\b', source.read_text(),
                                                             re.MULTILINE) is not None)
    return False


def test_every_named_file_and_module_exists():
    missing = []
    for path in DOCS:
        for code in INLINE_CODE.findall(_prose(path.read_text())):
            message = MESSAGE_TYPE.match(code)
            if message and not (REPO_ROOT / 'seg_perception_msgs' / 'msg' / f'{message.group(1)}.msg').is_file():
                missing.append(f'{_relative(path)}: message {code}')
            elif not message and REPO_PATH.match(code) and not list(REPO_ROOT.glob(code.rstrip('/'))):
                missing.append(f'{_relative(path)}: {code}')
            elif MODULE_NAME.match(code) and not _module_exists(code):
                missing.append(f'{_relative(path)}: {code}')
    for where, tokens in command_lines():
        for flag, module in zip(tokens, tokens[1:]):
            if flag == '-m' and module.startswith('seg_') and not _module_exists(module):
                missing.append(f'{where}: module {module}')
    assert not missing, 'the docs name files or modules that do not exist:\n' + '\n'.join(missing)
