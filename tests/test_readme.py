"""The README's commands, in the README's order, in one fresh directory, all succeed.

Every ``ecvit ...`` and ``python main.py ...`` line of the README's bash blocks runs as
written, except: commands that need data this machine does not have (ImageNet, CIFAR
files, several GPUs) or that only measure speed are skipped, and training commands get
trailing overrides that make them small (one or two epochs, small images) without
changing what they exercise (output folders, auto-resume, checkpoints, validate after).
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# README commands that cannot run here, by what they need
NEEDS_ELSEWHERE = ("experiments/", "benchmark", "torchrun", "run.sh", "pip install")
SMALL = {  # appended to training commands, keyed by the command's first words
    "ecvit train": ["TRAIN.EPOCHS", "2", "DATA.IMG_SIZE", "32"],
    "python main.py --mode train": ["TRAIN.EPOCHS", "1", "DATA.IMG_SIZE", "32",
                                    "DATA.TRAIN_SIZE", "64", "DATA.VAL_SIZE", "32"],
}


def readme_commands() -> list[str]:
    """Command lines of the README's bash blocks (continuations joined, comments dropped)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith(("ecvit ", "python main.py")) or part == "ecvit train":
                    commands.append(part)
    return commands


def make_inputs(folder: Path) -> None:
    """What the how-tos point at: an ImageNet-style my_data/ and two image files."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            (folder / "my_data" / split / name).mkdir(parents=True)
            for i in range(4):
                img = np.clip(rng.normal(80 * c + 60, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / "my_data" / split / name / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "img1.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(folder / "img2.jpg")


def test_readme_lists_the_commands_this_test_runs():
    runnable = [c for c in readme_commands() if not any(n in c for n in NEEDS_ELSEWHERE)]
    starts = [" ".join(c.split()[:3]) for c in runnable]
    assert runnable[0] == "ecvit train"  # the set-up command comes first
    assert "ecvit validate --checkpoint" in starts and "python main.py --mode" in starts
    assert any(c.startswith("ecvit predict") for c in runnable)


@pytest.mark.slow
def test_readme_commands_in_order_in_a_fresh_directory(tmp_path):
    make_inputs(tmp_path)
    ran = []
    for command in readme_commands():
        if any(n in command for n in NEEDS_ELSEWHERE):
            continue
        argv = shlex.split(command)
        extra = next((v for k, v in SMALL.items() if command.startswith(k)), [])
        if argv[0] == "ecvit":
            argv = [sys.executable, "-m", "ecvit", *argv[1:]]
        else:
            argv = [sys.executable, str(ROOT / "main.py"), *argv[2:]]
        proc = subprocess.run([*argv, *extra], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
        ran.append(command)
    assert len(ran) >= 8, ran
    assert (tmp_path / "runs" / "pets" / "model_best.validate.json").is_file()
    assert (tmp_path / "output" / "latest" / "model_best.onnx").is_file()
