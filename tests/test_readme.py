"""The README's and the docs pages' commands run as written, and the docs site builds.

Every ``ecvit ...`` and ``python main.py ...`` line of a ``bash`` block runs as written
(an environment prefix such as ``WANDB_MODE=offline`` included), and every ``python``
block runs as a script, in the page's order: the README in a fresh folder, then each docs
page in a copy of that folder (so a page may use the run of the README's ``ecvit train``).
A block that needs what a test machine lacks (a GPU, several machines, downloaded data, the
network, minutes of measurement) is left out explicitly, by the line

    <!-- not run by the docs test: REASON -->

right before it in the page's source. In a block that runs, the only commands not run are
the set-up block's install and test commands (CI runs those itself); anything else fails
the fast checks below, so no command is dropped silently. Training commands get trailing
overrides that make them small (one or two epochs, small images) without changing what
they exercise (run folders, resuming, checkpoints, validate after).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARKER = re.compile(r"<!-- not run by the docs test: (?P<reason>[^>]*?)\s*-->\s*$")
# the README's two set-up commands, verbatim (CI runs the second one)
SETUP_COMMANDS = ('pip install -e . && ecvit train',
                  'pip install -e ".[test]" && python -m pytest -q')
# commands of a running block that the test leaves to CI: the installs and the test suite
LEFT_TO_CI = ("pip install -e .", 'pip install -e ".[test]"', "python -m pytest -q")
SMALL = {  # appended to training commands, keyed by the command's first words
    "ecvit train": ["TRAIN.EPOCHS", "2", "DATA.IMG_SIZE", "32"],
    "python main.py --mode train": ["TRAIN.EPOCHS", "1", "DATA.IMG_SIZE", "32",
                                    "DATA.TRAIN_SIZE", "64", "DATA.VAL_SIZE", "32"],
}
# what running a page's commands leaves behind, beside each command's exit code 0
LEAVES = {
    "README.md": ["output/latest/model_best.pth", "output/latest/train.log"],
    "index.md": ["output/latest/model_best.pth"],
    "training.md": ["runs/pets/model_best.validate.json", "runs/pets/model_best.confusion.png",
                    "runs/digits/checkpoint.pth", "output/digits/ecvit-tiny/model_best.pth",
                    "runs/reference/model_best.pth"],
    "inference.md": ["output/latest/model_best.onnx", "output/latest/model_best.safetensors",
                     "img1.attention.png", "predictions.csv", "predictions.parquet",
                     "output/latest/model_best.validate.json", "digits-ecvit/config.json",
                     "digits-ecvit/README.md", "runs/from-folder/model_best.pth"],
    "logging.md": ["runs/tracked/mlruns", "runs/wandb/wandb"],
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page: its language, its text and why it is not run."""

    page: str
    lang: str
    code: str
    skip: str | None  # the marker's reason, None for a block that runs


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the skip marker of the line before it."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opener = re.match(r"```(\w*)\s*$", lines[i])
        if not opener:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = SKIP_MARKER.match(lines[i - 1]) if i else None
        found.append(Block(path.name, opener[1], "\n".join(lines[i + 1:end]) + "\n",
                           marker["reason"] if marker else None))
        i = end + 1
    return found


def shell_commands(code: str) -> list[str]:
    """Command lines of a bash block: continuations joined, comments dropped, && split."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("  #")[0].split(" # ")[0].strip()
        if line and not line.startswith("#"):
            commands += [part.strip() for part in line.split("&&")]
    return commands


def split_env(command: str) -> tuple[dict[str, str], list[str]]:
    """``A=1 B=2 cmd args`` -> ({A: 1, B: 2}, [cmd, args])."""
    argv = shlex.split(command)
    env = {}
    while argv and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        key, value = argv.pop(0).split("=", 1)
        env[key] = value
    return env, argv


def runs(command: str) -> bool:
    """Whether the test runs this command: an ``ecvit`` or ``python main.py`` line."""
    argv = split_env(command)[1]
    return argv[:1] == ["ecvit"] or argv[:2] == ["python", "main.py"]


def nav_pages() -> list[str]:
    """The docs pages in the order of mkdocs.yml's nav."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [next(iter(entry.values())) for entry in nav]


def runnable_pages() -> list[str]:
    return [p for p in nav_pages() if any(b.skip is None and b.lang in ("bash", "python")
                                          for b in blocks(DOCS / p))]


def all_blocks() -> list[Block]:
    return blocks(ROOT / "README.md") + [b for p in nav_pages() for b in blocks(DOCS / p)]


# ---------------------------------------------------------------------------- fast checks


def test_every_docs_page_is_in_the_nav_once():
    pages = nav_pages()
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))
    assert len(set(pages)) == len(pages) and pages[0] == "index.md"


def test_readme_is_a_short_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    setup = [b.code for b in blocks(ROOT / "README.md") if b.lang == "bash"][0]
    for command in SETUP_COMMANDS:  # verbatim, in the README's first bash block
        assert any(line.startswith(command + " ") or line == command for line in setup.splitlines())
    assert "multiply-accumulates" in text and "FLOPs" in text
    for arxiv in ("2504.14825", "2103.15808", "2407.19394"):
        assert arxiv in text
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)(?:#[\w-]+)?\)", text))
    assert linked == set(nav_pages())  # every page linked, no link to a missing one


def test_skip_markers_name_a_reason_and_mark_a_block():
    for path in [ROOT / "README.md", *DOCS.glob("*.md")]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "not run by the docs test" in line:
                marker = SKIP_MARKER.match(line)
                assert marker and marker["reason"], f"{path.name}:{i + 1}: {line}"
                assert lines[i + 1].startswith("```"), f"{path.name}:{i + 1}: marker without a block"


def test_blocks_that_run_hold_only_commands_the_test_runs():
    """No command of a running block is dropped silently: it runs, or CI runs it."""
    for block in all_blocks():
        if block.lang == "bash" and block.skip is None:
            for command in shell_commands(block.code):
                assert runs(command) or command in LEFT_TO_CI, f"{block.page}: {command}"


def test_the_commands_that_run_cover_every_subcommand():
    commands = [c for b in all_blocks() if b.lang == "bash" and b.skip is None
                for c in shell_commands(b.code) if runs(c)]
    readme = [c for b in blocks(ROOT / "README.md") if b.lang == "bash" and b.skip is None
              for c in shell_commands(b.code) if runs(c)]
    assert readme[0] == "ecvit train"  # the set-up command comes first
    starts = {" ".join(split_env(c)[1][:2]) for c in commands}
    for sub in ("train", "validate", "predict", "export", "attention", "models"):
        assert f"ecvit {sub}" in starts, sub
    assert "python main.py" in starts
    formats = {c.split("--format ")[1].split()[0] for c in commands if "--format " in c}
    assert formats == {"onnx", "safetensors", "torchscript", "hf"}


def test_mkdocs_build_strict(tmp_path):
    """A broken link, a missing anchor or a page outside the nav fails the build."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in nav_pages():
        html = "index.html" if page == "index.md" else f"{page[:-3]}/index.html"
        assert (tmp_path / "site" / html).is_file(), page


# ---------------------------------------------------------------------------- running them


def make_inputs(folder: Path) -> None:
    """What the how-tos point at: an ImageNet-style my_data/, two image files and, as in a
    checkout, the experiments/ folder."""
    (folder / "experiments").symlink_to(ROOT / "experiments", target_is_directory=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            (folder / "my_data" / split / name).mkdir(parents=True)
            for i in range(4):
                img = np.clip(rng.normal(80 * c + 60, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / "my_data" / split / name / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "img1.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(folder / "img2.jpg")


def run_page(path: Path, folder: Path) -> list[str]:
    """Run a page's runnable blocks in order in ``folder``; returns what ran."""
    ran = []
    for block in blocks(path):
        if block.skip is not None:
            continue
        if block.lang == "python":
            argv, env, label = [sys.executable, "-c", block.code], {}, block.code.splitlines()[0]
            _run(argv, env, folder, f"{path.name}: python block starting {label!r}")
            ran.append(f"python block: {label}")
        elif block.lang == "bash":
            for command in shell_commands(block.code):
                if not runs(command):
                    continue
                env, argv = split_env(command)
                extra = next((v for k, v in SMALL.items() if " ".join(argv).startswith(k)), [])
                if argv[0] == "ecvit":
                    argv = [sys.executable, "-m", "ecvit", *argv[1:]]
                else:
                    argv = [sys.executable, str(ROOT / "main.py"), *argv[2:]]
                _run([*argv, *extra], env, folder, f"{path.name}: {command}")
                ran.append(command)
    return ran


def _run(argv: list[str], env: dict[str, str], folder: Path, what: str) -> None:
    proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert proc.returncode == 0, f"{what}\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}"


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory) -> Path:
    """A fresh folder with the how-tos' inputs in which the README's commands ran."""
    folder = tmp_path_factory.mktemp("readme")
    make_inputs(folder)
    ran = run_page(ROOT / "README.md", folder)
    assert ran[0] == "ecvit train", ran
    return folder


@pytest.mark.slow
def test_readme_commands_in_order_in_a_fresh_directory(readme_folder):
    for leaf in LEAVES["README.md"]:
        assert (readme_folder / leaf).exists(), leaf
    runs_made = list((readme_folder / "output" / "train").iterdir())
    assert len(runs_made) == 1 and runs_made[0].name.endswith("-ecvit_tiny-32"), runs_made
    assert (readme_folder / "output" / "latest").resolve() == runs_made[0].resolve()


@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages())
def test_docs_page_commands_in_order(page, readme_folder, tmp_path):
    folder = tmp_path / "work"
    shutil.copytree(readme_folder, folder, symlinks=True)
    ran = run_page(DOCS / page, folder)
    assert ran, page
    for leaf in LEAVES.get(page, []):
        assert (folder / leaf).exists(), f"{page}: {leaf}"
