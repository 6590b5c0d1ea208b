"""Every command in the ```bash blocks of README.md and docs/*.md (and the command lines of scripts/*.sh) names a
program that exists in this environment, and every flag it gives is accepted: our scripts' flags by the scripts' own
parsers (captured when the script parses its arguments, before it does anything), then the same validation the
script applies before it loads anything (the argument dataclasses' checks, the checks across them, recipes loaded
by name); `accelerate launch` options by accelerate's parser, `hf` subcommands and options by `hf <subcommand>
--help`, pip options by pip's parser. Nothing is run or downloaded: paths stand for data that is not here."""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import load_file_module

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The user documents whose commands are checked: the README, every page of the documentation site and BENCHMARKS.md.
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "BENCHMARKS.md"]
SEPARATORS = {"&&", "||", ";", "|", "&"}
SHELL_SUFFIXES = (".sh", ".slurm", ".sbatch")  # batch scripts are shell scripts: their command lines are checked
LAUNCHERS = ("accelerate", "python", "python3")
# torch builds that exist today (December 2026) for the version the README pins: PyTorch's own index serves 2.13.0
# for CPU, CUDA 12.6 and CUDA 13.0 (no cu124 build of 2.13).
TORCH_INDEXES = {"cpu", "cu126", "cu130"}


@dataclass
class Command:
    """One simple command: its tokens (environment assignments removed) and where it was written."""

    tokens: list[str]
    where: str

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.tokens)}"


def split_commands(text: str, where: str, arrays: dict[str, list[str]] | None = None) -> list[Command]:
    """Shell text -> simple commands: line continuations joined, comments dropped, split at && || ; | &, leading
    NAME=value assignments removed, "${NAME[@]}" replaced by that array's words (``arrays``)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\+?=)", current[0]):
                    current.pop(0)
                if current:
                    commands.append(Command(current, where))
                current = []
            elif arrays is not None and (match := re.fullmatch(r"\$\{(\w+)\[@\]\}", token)):
                current += arrays.get(match.group(1), [])
            else:
                current.append(token)
    return commands


def document_commands(path: Path) -> list[Command]:
    """The commands of a Markdown document's ```bash blocks, each named by file and line."""
    text = path.read_text()
    commands = []
    for match in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        line = text[: match.start()].count("\n") + 2
        commands += split_commands(match.group(1), f"{path.relative_to(ROOT)}:{line}")
    return commands


def readme_commands() -> list[Command]:
    return [command for document in DOCUMENTS for command in document_commands(document)]


def shell_script_commands(path: Path, extra: list[str]) -> list[Command]:
    """The commands a scripts/*.sh runs, with "$@" replaced by ``extra`` and arrays (NAME+=(...)) expanded."""
    text = path.read_text()
    defaults = dict(re.findall(r"^(\w+)=\$\{\1:-(.*)\}$", text, flags=re.M))  # NAME=${NAME:-default}
    arrays: dict[str, list[str]] = {}
    for name, words in re.findall(r"^\s*(\w+)\+?=\((.*?)\)", text, flags=re.M | re.S):
        arrays.setdefault(name, []).extend(shlex.split(words))
    commands = []
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    for command in split_commands(text, where, arrays):
        tokens = [t for token in command.tokens for t in (extra if token == "$@" else [token])]
        tokens = [defaults.get(token[1:], token) if token.startswith("$") else token for token in tokens]
        start = next((i for i, token in enumerate(tokens) if token in LAUNCHERS), None)
        if start is not None:  # `srun [options] accelerate launch ...` checks from the launcher on
            commands.append(Command(tokens[start:], command.where))
    return commands


# ---- our scripts: their own parsers --------------------------------------------------------------------------


class _Parsed(BaseException):
    """Raised once the script's parser has read the arguments (a BaseException: scripts' `except Exception` and
    `except ValueError` handlers do not swallow it)."""

    def __init__(self, parser, unknown, error):
        super().__init__()
        self.parser, self.unknown, self.error = parser, unknown, error


def script_flags_problem(script: Path, argv: list[str], monkeypatch) -> str | None:
    """Run ``script``'s main(argv) until its argument parser has parsed ``argv``; None when every flag is accepted,
    else what was refused."""
    original = argparse.ArgumentParser.parse_known_args

    def capture(parser, args=None, namespace=None):
        try:
            _, unknown = original(parser, args, namespace)
        except (SystemExit, ValueError) as error:
            raise _Parsed(parser, [], error) from None
        raise _Parsed(parser, unknown, None)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        patch.setattr(sys, "argv", [str(script), *argv])
        patch.syspath_prepend(str(script.parent))
        module = load_file_module(script, f"readme_{script.stem}")  # not __main__: defines main() without running it
        try:
            main = module.main
            result = main(argv) if main.__code__.co_argcount > 0 else main()
        except _Parsed as parsed:
            if parsed.error is not None:
                return f"refused: {parsed.error}"
            if parsed.unknown:
                return f"unknown flags {parsed.unknown}"
            result = parsed
    if not isinstance(result, _Parsed):
        return f"main() returned {result!r} without parsing its arguments"
    return validation_problem(script, argv, module)  # with the real parser again


def on_this_machine(argv: list[str]) -> list[str]:
    """``argv`` as this machine can validate it: without a GPU, TrainingArguments refuses a recipe's bf16 unless the
    run is on the CPU, a check of the hardware rather than of the command."""
    if torch.cuda.is_available() or "--use_cpu" in argv:
        return argv
    return [*argv, "--use_cpu"]


def validation_problem(script: Path, argv: list[str], module) -> str | None:
    """The checks a script applies to its parsed arguments before it loads a model or reads data: None when they
    pass, else the error. distill.py: the three dataclasses, the checks across them, the recipe by name;
    evaluate.py: `check_arguments` (benchmarks, split lists, roots, the ground-truth declaration); export.py: ExportArguments' checks."""
    try:
        if script.name == "distill.py":
            if not argv or argv[0] == "--demo":  # the demo is the demo recipe plus overrides
                argv = ["--config", "demo", *argv[1:]]
            module.parse_distill_args(on_this_machine(argv))
        elif script.name == "evaluate.py":
            from hf_distill.evaluation_run import check_arguments

            check_arguments(module.parse_args(argv))
        elif script.name == "export.py":
            from transformers import HfArgumentParser

            from hf_distill.export import ExportArguments

            HfArgumentParser(ExportArguments).parse_args_into_dataclasses(argv)
    except (ValueError, FileNotFoundError, SystemExit) as error:
        return f"invalid: {error}"
    return None


# ---- programs -------------------------------------------------------------------------------------------------


def setup_extras() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return set(config["options.extras_require"])


def check_pip(args: list[str]) -> str | None:
    from pip._internal.commands import create_command

    if not args or args[0] != "install":
        return f"pip {args[:1]}: only pip install is expected in the README"
    try:
        options, targets = create_command("install").parse_args(args[1:])
    except SystemExit:
        return f"pip refused {shlex.join(args)}"
    extras = {extra for target in targets + (options.editables or [])
              for extra in re.findall(r"^\.\[([\w,-]+)\]$", target) for extra in extra.split(",")}
    if extras - setup_extras():
        return f"extras {sorted(extras - setup_extras())} are not in setup.cfg"
    for url in [options.index_url] if "--index-url" in args else []:
        build = re.fullmatch(r"https://download\.pytorch\.org/whl/(\w+)", url)
        if build is None or build.group(1) not in TORCH_INDEXES:
            return f"{url}: not one of PyTorch's indexes for torch 2.13 ({sorted(TORCH_INDEXES)})"
    return None


def check_hf(args: list[str]) -> str | None:
    path = []
    for token in args:
        if token.startswith("-"):
            break
        path.append(token)
    result = subprocess.run(["hf", *path, "--help"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        return f"`hf {' '.join(path)}` does not exist: {result.stderr.strip()[-300:]}"
    flags = {token.split("=")[0] for token in args if token.startswith("--")}
    missing = sorted(flag for flag in flags if not re.search(rf"{re.escape(flag)}\b", result.stdout))
    return f"`hf {' '.join(path)}` has no option {missing}" if missing else None


def check_script(path_text: str, argv: list[str], monkeypatch) -> str | None:
    script = ROOT / path_text
    if not script.is_file():
        return f"{path_text} does not exist"
    if script.suffix not in (".py", *SHELL_SUFFIXES):
        return None  # another program (.ci/run): it exists
    if script.suffix in SHELL_SUFFIXES:
        problems = [check(command, monkeypatch) for command in shell_script_commands(script, argv)]
        return "; ".join(p for p in problems if p) or None
    return script_flags_problem(script, argv, monkeypatch)


def check_accelerate(args: list[str], monkeypatch) -> str | None:
    if args[:1] != ["launch"]:
        return f"accelerate {args[:1]}: only accelerate launch is expected"
    from accelerate.commands.launch import launch_command_parser

    try:
        launch = launch_command_parser().parse_args(args[1:])
    except SystemExit:
        return f"accelerate launch refused the options of {shlex.join(args)}"
    if launch.config_file and not (ROOT / launch.config_file).is_file():
        return f"--config_file {launch.config_file} does not exist"
    return check_script(launch.training_script, launch.training_script_args, monkeypatch)


def check(command: Command, monkeypatch) -> str | None:
    """None when the command's program exists and accepts its flags, else the problem."""
    program, *args = command.tokens
    if program in ("cd", "export"):
        return None
    if program in ("python", "python3"):
        if args[:1] == ["-m"]:
            module = args[1]
            if importlib.util.find_spec(module) is None:
                return f"python -m {module}: no such module"
            return check_pip(args[2:]) if module == "pip" else None
        return check_script(args[0], args[1:], monkeypatch)
    if program in ("bash", "sh"):
        return check_script(args[0], args[1:], monkeypatch)
    if program.startswith("./"):
        return check_script(program[2:], args, monkeypatch)
    if program == "sbatch":  # a cluster's scheduler need not be installed here: its batch script is checked
        script = next((i for i, arg in enumerate(args) if arg.endswith(SHELL_SUFFIXES)), None)
        if script is None:
            return "sbatch without a batch script"
        return check_script(args[script], args[script + 1:], monkeypatch)
    if shutil.which(program) is None:
        return f"{program}: not installed"
    if program == "pip":
        return check_pip(args)
    if program == "hf":
        return check_hf(args)
    if program == "accelerate":
        return check_accelerate(args, monkeypatch)
    return None


# ---- the tests -------------------------------------------------------------------------------------------------


def test_the_parser_of_commands_handles_the_shell_forms_the_readme_uses():
    text = ('# a comment\nA=1 B="x y" ./scripts/train_nyu.sh --lr 1e-4  # trailing\n'
            'python -m pip install "torch==2.13.0" -e . && python scripts/distill.py\n'
            'accelerate launch --num_processes 2 scripts/distill.py \\\n    --config demo\n')
    assert [c.tokens for c in split_commands(text, "t")] == [
        ["./scripts/train_nyu.sh", "--lr", "1e-4"],
        ["python", "-m", "pip", "install", "torch==2.13.0", "-e", "."],
        ["python", "scripts/distill.py"],
        ["accelerate", "launch", "--num_processes", "2", "scripts/distill.py", "--config", "demo"],
    ]
    assert [c.tokens for c in split_commands("srun -n 2 accelerate launch x.py", "t")] == [
        ["srun", "-n", "2", "accelerate", "launch", "x.py"]]
    nyu = shell_script_commands(ROOT / "scripts" / "train_nyu.sh", ["--lr", "1e-4"])
    assert len(nyu) == 1 and nyu[0].tokens[-4:] == ["--teacher_checkpoints", "$TEACHER_CHECKPOINT", "--lr", "1e-4"]


def test_the_checks_catch_a_wrong_flag_a_missing_program_and_a_stale_index(monkeypatch):
    bad = [
        "python scripts/distill.py --config demo --no_such_flag 1",
        "python scripts/evaluate.py --model m --benchmark nyu --no_such_flag",
        "accelerate launch --no_such_option 2 scripts/distill.py",
        "bash scripts/train_nyu.sh --no_such_flag",
        "python scripts/no_such_script.py",
        "python scripts/distill.py --config sa1b_multiteacher --teacher_models a --teacher_sampling_weights 1 2",
        "python scripts/distill.py --config nyu --dataset_dir d --global_crop_size 384",
        "python scripts/distill.py --config no_such_recipe",
        "python scripts/distill.py --normalization none --teacher_models a b",
        "python scripts/evaluate.py --model m --benchmark no_such_benchmark --data_dir d",
        "python scripts/export.py --model m --push_to_hub",
        "sbatch --nodes 2 scripts/no_such_job.slurm",
        "huggingface-cli login",
        "hf download you/model --no-such-option",
        "pip install torch --index-url https://download.pytorch.org/whl/cu124",
        'pip install -e ".[no_such_extra]"',
    ]
    for text in bad:
        (command,) = split_commands(text, "t")
        assert check(command, monkeypatch) is not None, text


def test_a_batch_script_is_checked_through_its_launcher(tmp_path, monkeypatch):
    job = tmp_path / "job.slurm"
    job.write_text("#!/bin/bash\n#SBATCH --nodes=2\nOUT=${OUT:-output/x}\n"
                   "srun --ntasks-per-node 1 accelerate launch --num_processes 8 scripts/distill.py \\\n"
                   "    --config sa1b_multiteacher --output_dir \"$OUT\" \"$@\"\n")
    (command,) = split_commands(f"sbatch --nodes 2 {job} --max_steps 10", "t")
    assert check(command, monkeypatch) is None
    (command,) = split_commands(f"sbatch {job} --no_such_flag", "t")
    assert "unknown flags ['--no_such_flag']" in check(command, monkeypatch)


def write_placeholders(command: Command, folder: Path) -> None:
    """Stand-ins for the user's files a command names and the check reads: a `--config my_recipe.yaml` that is not
    in the repository becomes an empty mapping in ``folder`` (the working directory of the check)."""
    tokens = command.tokens
    for at, token in enumerate(tokens[:-1]):
        name = tokens[at + 1]
        if token == "--config" and name.endswith((".yaml", ".yml", ".json")) and not (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("{}\n")


@pytest.mark.parametrize("command", readme_commands(), ids=str)
def test_readme_command(command, monkeypatch, tmp_path):
    write_placeholders(command, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert check(command, monkeypatch) is None, str(command)


def test_every_document_has_commands_and_the_readme_starts_with_the_two_first_commands():
    assert {path.name for path in DOCUMENTS} >= {"README.md", "quickstart.md", "training.md"}
    first = document_commands(README)[:3]
    assert [c.tokens for c in first] == [["python", "-m", "pip", "install", "torch==2.13.0", "-e", "."],
                                        ["python", "scripts/distill.py"], ["bash", ".ci/run"]]


def test_the_own_images_command_of_the_readme_runs_one_teacher_drawn_uniformly(caplog):
    """`--config sa1b_multiteacher --teacher_models depthanything-large`: the recipe's 7:3 weights are one per teacher
    of its two; another number of teachers without weights of their own is drawn uniformly, with a note in the log."""
    from hf_distill.training.cli import parse_distill_args

    (command,) = [c for c in readme_commands() if c.where.startswith("README") and "--dataset_format" in c.tokens
                  and "images" in c.tokens]
    argv = on_this_machine(command.tokens[command.tokens.index("scripts/distill.py") + 1:])
    with caplog.at_level("INFO", logger="hf_distill"):
        model_args, data_args, training_args = parse_distill_args(argv)
    assert model_args.teacher_models == ["depthanything-large"]
    assert model_args.teacher_sampling_weights is None and model_args.teacher_probabilities == [1.0]
    assert data_args.dataset_format == "images" and data_args.global_crop_size == 560  # the recipe's settings
    assert "teacher_sampling_weights [0.7, 0.3]" in caplog.text and "uniformly" in caplog.text

    # as many teachers as the recipe's (local copies of them, say): its 7:3 weights stay theirs
    copies, _, _ = parse_distill_args(on_this_machine(["--config", "sa1b_multiteacher", "--teacher_models",
                                                       "/models/dav2-large", "/models/genpercept"]))
    assert copies.teacher_sampling_weights == [0.7, 0.3]
    three, _, _ = parse_distill_args(on_this_machine(["--config", "sa1b_multiteacher", "--teacher_models", "a", "b",
                                                      "c"]))
    assert three.teacher_probabilities == pytest.approx([1 / 3] * 3)
    chosen, _, _ = parse_distill_args(on_this_machine(["--config", "sa1b_multiteacher", "--teacher_models=a",
                                                       "--teacher_sampling_weights", "1"]))
    assert chosen.teacher_models == ["a"] and chosen.teacher_sampling_weights == [1.0]


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_shell_script_command_lines(script, monkeypatch):
    commands = shell_script_commands(script, [])
    assert commands, f"{script.name} runs no python/accelerate command"
    for command in commands:
        assert check(command, monkeypatch) is None, str(command)
