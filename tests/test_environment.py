"""The pins agree everywhere, and `phi4lab doctor` reports what it should."""

from pathlib import Path

import yaml

from phi4lab import doctor
from phi4lab.cli import main
from phi4lab.exercises import coursemap

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    return {line.strip().lower() for line in lines if "==" in line and not line.strip().startswith("#")}


def test_environment_yml_has_the_same_pins_as_constraints():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == pins((ROOT / "constraints.txt").read_text().splitlines())
    assert "torch==2.13.0" in pins(pip_section)


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    commands = [line for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make lab", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_doctor_reports_the_essentials(capsys):
    info = doctor.report()
    for key in ["python", "torch", "transformers", "transformer-lens", "cpu", "cpu bf16 isa", "ram", "gpu",
                "cl100k ranks", "microsoft/phi-4", "phi4-tiny"]:
        assert key in info
    assert info["cl100k ranks"] == "present, sha256 verified"
    assert doctor.problems() == []
    assert main(["doctor"]) == 0
    assert "transformer-lens" in capsys.readouterr().out


def test_bf16_detection_reads_cpu_flags():
    assert doctor.native_bf16({"avx2", "avx512_bf16"}) and not doctor.native_bf16({"avx2", "fma"})


def test_require_explains_the_fix(monkeypatch):
    monkeypatch.setitem(doctor.MINIMUM, "torch", "99.0")
    try:
        doctor.require()
    except doctor.EnvironmentProblem as err:
        assert "make lab" in str(err) and "torch" in str(err)
    else:
        raise AssertionError("require() accepted torch older than the minimum")


def test_student_command(tmp_path, capsys):
    assert main(["student", "--course", str(ROOT / "course"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "00_welcome.ipynb").exists()
    exercises = len(coursemap.read_notebook(ROOT / "course" / "00_welcome.ipynb").exercises)
    assert f"00_welcome.ipynb: {exercises} exercise(s)" in capsys.readouterr().out
