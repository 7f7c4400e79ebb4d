"""The README's "Using it" block runs as written, in order, in a fresh folder: each line must
exit 0. Budgets are made small (a test may not take the ResNet-50-at-256x128 minutes): inputs
are 64x32, tuning and search get a few trials and steps. Nothing else about a line changes."""
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (pattern, replacement): budgets only
SMALL = [
    (r"^(reidc zoo export .*)$", r"\1 --input-size 64x32"),
    (r"\(4, 3, 256, 128\)", "(4, 3, 64, 32)"),
    (r"^(reidc bench .*)$", r"\1 --repeat 2 --no-torch-compile"),
    (r"--trials 64", "--trials 1 --only fused_conv2d_add_relu"),
    (r"^(reidc search .*)$", r"\1 --dataset synthetic:12 --train-steps 2 --population 2 --generations 1 "
                             r"--measure-front 1 --scenario visible:1 --latency-table stages --time-limit 15m"),
]


def readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it"):]
    body = section[section.index("```\n") + 4:]
    body = body[:body.index("```")]
    lines = []
    for line in body.splitlines():
        line = re.split(r"\s{2,}#", line)[0].strip()  # drop the trailing comments
        if line:
            lines.append(line)
    return lines


def small(line: str) -> str:
    for pat, rep in SMALL:
        line = re.sub(pat, rep, line)
    return line


def test_the_block_is_what_the_test_runs():
    lines = readme_block()
    assert lines[0] == "source .venv/bin/activate"
    assert sum(ln.startswith("reidc ") for ln in lines) >= 15
    assert all(small(ln) != ln for ln in lines if ln.startswith(("reidc zoo", "reidc bench", "reidc tune", "reidc search")))


@pytest.mark.slow
def test_the_readme_block_runs_in_order(tmp_path):
    lines = readme_block()
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)  # `source .venv/bin/activate` as written
    script = [small(line) for line in lines]
    shell = subprocess.Popen(["bash"], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    for k, line in enumerate(script):
        t0 = time.monotonic()
        marker = f"__readme_line_{k}_rc="
        shell.stdin.write(f"{line} </dev/null\necho {marker}$?\n")  # one shell: state carries over
        shell.stdin.flush()
        out = []
        while True:
            got = shell.stdout.readline()
            if not got:
                pytest.fail(f"the shell ended at line {k + 1}: {line}\n" + "".join(out[-30:]))
            if got.startswith(marker):
                r = int(got[len(marker):])
                break
            out.append(got)
        print(f"{time.monotonic() - t0:6.1f} s  {line}")  # shown with -s: where the test's time goes
        assert r == 0, f"README line {k + 1} failed (exit {r}): {line}\n" + "".join(out[-30:])
        assert "Traceback" not in "".join(out), "".join(out)
    shell.stdin.close()
    shell.wait(timeout=60)
    assert (tmp_path / "feats.npy").is_file() and (tmp_path / "feats-rpi4.npy").is_file()
    assert (tmp_path / "build" / "r50-orin" / "kernels.cu").is_file()


def test_the_python_section_runs_as_written(tmp_path):
    """README "From Python": the block, exactly as written, in a fresh folder."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    code = section[section.index("```python\n") + 10:]
    code = code[:code.index("```")]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "refused: " in r.stdout and (tmp_path / "build" / "r18-api" / "manifest.json").is_file()
