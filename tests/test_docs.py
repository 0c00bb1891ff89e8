"""The user documentation says only what is true of this checkout.

Reads README.md, docs/*.md and benchmarks/RESULTS.md and checks that:
- every relative markdown link resolves to a file, and its `#anchor` to a heading there;
- every `run_local.py [COMMAND]` in a shell block has a `--help` that exits 0 and lists every
  option the block passes (scripts/run_pipeline.sh passes its options to run_local.py);
- every scripts/*, benchmarks/*.py and `python -m` module of this project a shell block runs
  exists, and a Python script's source defines each option the block passes it;
- every TOML block loads with pipeline.config.load_config (so each key is a real setting);
- every repository path named in inline code exists, and every `test_file.py::test_name`
  the docs cite as proof is a test function in that file.
Nothing here runs the pipeline: the CLI's parsers are called in this process.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "cron"}
# Top-level folders of this repository: an inline-code path starting with one names a file here.
REPO_DIRS = (
    "pipeline",
    "components",
    "models",
    "schema",
    "data",
    "scripts",
    "benchmarks",
    "tests",
    "docs",
    "dags",
)
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>&1", "(", ")"}

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# A test file (`test_x.py`, `tests/test_x.py`) or a test of the file named last (`::test_y`).
TEST_REFERENCE = re.compile(r"\b(test_\w+\.py)\b|::(test_\w+)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1).lower(), m.group(2)) for m in FENCE.finditer(text)]


def _prose(text: str) -> str:
    """`text` without its fenced code blocks."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*]{1,2}", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of markdown file `path` (duplicates numbered)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(_text(path)).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _shell_commands(path: Path) -> list[list[str]]:
    """The tokens of every command line in the shell blocks of `path` (continuations joined,
    comments dropped, operators such as | and >> as tokens of their own)."""
    commands = []
    for language, body in _blocks(_text(path)):
        if language not in SHELL_LANGUAGES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            commands.append(list(lexer))
    return commands


def _arguments(tokens: list[str], start: int) -> list[str]:
    """The arguments after tokens[start - 1], up to the next shell operator."""
    args = []
    for token in tokens[start:]:
        if token in SHELL_OPERATORS:
            break
        args.append(token)
    return args


def _options(args: list[str]) -> list[str]:
    """The option names in `args`: `--name`, `--name=value`, `[--name N]` and `-v` give their name."""
    names = []
    for arg in args:
        name = arg.strip("[]").split("=", 1)[0]
        if re.fullmatch(r"--?[A-Za-z][\w-]*", name):
            names.append(name)
    return names


def _help(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """What `run_local.py *argv --help` prints; fails the test unless it exits 0."""
    monkeypatch.setenv("COLUMNS", "250")  # one option per line, never wrapped mid-name
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(SystemExit) as stopped:
            cli.main([*argv, "--help"])
    assert stopped.value.code == 0, f"run_local.py {' '.join(argv)} --help exited {stopped.value.code}"
    return out.getvalue()


def _lists_option(help_text: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", help_text) is not None


def _run_local_uses() -> list[tuple[str, list[str], list[str]]]:
    """(doc, command, arguments after it) for every run_local.py use in the docs."""
    uses = []
    for doc in DOCS:
        for tokens in _shell_commands(doc):
            for i, token in enumerate(tokens):
                if token.endswith("run_local.py") or token.endswith("scripts/run_pipeline.sh"):
                    args = _arguments(tokens, i + 1)
                    command: list[str] = []
                    if args and args[0] in cli.COMMANDS:
                        command = [args.pop(0)]
                        if command == ["metadata"] and args and not args[0].startswith("-"):
                            command.append(args.pop(0))
                    uses.append((_rel(doc), command, args))
    return uses


def test_the_docs_exist_and_name_no_internal_issue_numbers():
    for doc in DOCS:
        assert doc.is_file(), f"{_rel(doc)} is missing"
        for number, line in enumerate(_text(doc).splitlines(), 1):
            assert not re.search(r"\bissue \d+|(?<![\w/-])#\d+\b", line, re.I), (
                f"{_rel(doc)}:{number} names an internal issue number: {line.strip()}"
            )


def test_every_relative_link_and_anchor_resolves():
    checked = 0
    for doc in DOCS:
        for target in LINK.findall(INLINE_CODE.sub("", _prose(_text(doc)))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (doc.parent / file_part).resolve() if file_part else doc
            assert linked.exists(), f"{_rel(doc)}: link {target} points to a missing file"
            if anchor:
                assert linked.suffix == ".md", (
                    f"{_rel(doc)}: link {target} has an anchor into a non-markdown file"
                )
                assert anchor in _anchors(linked), (
                    f"{_rel(doc)}: link {target}: no heading #{anchor} in {_rel(linked)}"
                )
            checked += 1
    assert checked >= 20, f"only {checked} links found: the link pattern no longer matches the docs"


def test_every_run_local_command_and_option_shown_exists(monkeypatch):
    uses = _run_local_uses()
    commands = {tuple(command) for _, command, _ in uses}
    assert {(), ("runs",), ("status",), ("rollback",), ("predict",)} <= commands, (
        f"the docs no longer show the basic commands; found {sorted(commands)}"
    )
    helps = {command: _help(list(command), monkeypatch) for command in commands}
    for doc, command, args in uses:
        for name in _options(args):
            assert _lists_option(helps[tuple(command)], name), (
                f"{doc}: run_local.py {' '.join(command)} has no option {name}"
            )
        if not command:  # the run itself: its whole command line must parse (choices, numbers)
            with contextlib.redirect_stderr(io.StringIO()) as error:
                try:
                    cli.build_run_parser().parse_args(args)
                except SystemExit:
                    pytest.fail(
                        f"{doc}: run_local.py {' '.join(args)}: {error.getvalue().strip().splitlines()[-1]}"
                    )


def test_every_script_benchmark_and_module_run_exists_with_the_options_shown():
    scripts = 0
    for doc in DOCS:
        for tokens in _shell_commands(doc):
            for i, token in enumerate(tokens):
                path = token.removeprefix("./")
                if re.fullmatch(r"(scripts|benchmarks)/[\w.-]+", path):
                    scripts += 1
                    assert (ROOT / path).is_file(), f"{_rel(doc)}: runs {path}, which does not exist"
                    if path.endswith(".py"):
                        source = _text(ROOT / path)
                        for name in _options(_arguments(tokens, i + 1)):
                            assert f'"{name}"' in source or f"'{name}'" in source, (
                                f"{_rel(doc)}: {path} defines no option {name}"
                            )
                if token == "-m" and i + 1 < len(tokens):
                    module = tokens[i + 1]
                    if module.split(".")[0] in REPO_DIRS:
                        base = ROOT / module.replace(".", "/")
                        assert base.with_suffix(".py").is_file() or (base / "__init__.py").is_file(), (
                            f"{_rel(doc)}: runs python -m {module}, which does not exist"
                        )
    assert scripts >= 10, f"only {scripts} script runs found: the command pattern no longer matches the docs"


def test_every_toml_example_is_a_valid_config(tmp_path):
    examples = 0
    for doc in DOCS:
        for language, body in _blocks(_text(doc)):
            if language != "toml":
                continue
            examples += 1
            config_file = tmp_path / f"example-{examples}.toml"
            config_file.write_text(body, encoding="utf-8")
            try:
                load_config(str(config_file))
            except Exception as e:  # noqa: BLE001 - say which doc's example broke, and how
                pytest.fail(f"{_rel(doc)}: TOML example {examples} is not a valid config: {e}")
    assert examples >= 3, f"only {examples} TOML examples found"


def test_every_repository_path_in_inline_code_exists():
    checked = 0
    for doc in DOCS:
        for code in INLINE_CODE.findall(_prose(_text(doc))):
            for word in code.split():
                path = word.strip("(),;").split(":", 1)[0].rstrip("/")
                if not re.fullmatch(rf"(?:{'|'.join(REPO_DIRS)})(?:/[\w.-]+)+", path):
                    continue
                as_attribute = re.sub(r"\.\w+$", ".py", path)  # pipeline/formats/model.verify_model
                assert (ROOT / path).exists() or (ROOT / as_attribute).is_file(), (
                    f"{_rel(doc)}: `{code}` names {path}, which does not exist"
                )
                checked += 1
    assert checked >= 30, f"only {checked} paths found: the path pattern no longer matches the docs"


def test_every_test_cited_as_proof_exists():
    cited = 0
    for doc in DOCS:
        for code in INLINE_CODE.findall(_text(doc)):
            for word in code.split():
                m = re.fullmatch(r"(?:tests/)?(test_\w+\.py)", word.strip("(),;"))
                if m:
                    assert (ROOT / "tests" / m.group(1)).is_file(), f"{_rel(doc)}: names missing {word}"
        # `file.py::test_a`, then `::test_b` of the same file, across one table cell or paragraph
        current = None
        for m in TEST_REFERENCE.finditer(_text(doc)):
            if m.group(1):
                current = m.group(1)
                continue
            assert current, f"{_rel(doc)}: ::{m.group(2)} cited before any test file"
            source = _text(ROOT / "tests" / current)
            assert re.search(rf"^\s*def {m.group(2)}\(", source, re.M), (
                f"{_rel(doc)}: cites tests/{current}::{m.group(2)}, which is not a test there"
            )
            cited += 1
    assert cited >= 100, f"only {cited} cited tests found: the reliability table no longer matches"
