"""A student edition that stands on its own: stubs are reported, stood in for, and never pass."""

from __future__ import annotations

import ast
import importlib
import inspect
import types

import nbformat
import pytest
import torch

from phi4lab.exercises import standalone
from phi4lab.exercises.checking import ExerciseFailure, check_function
from phi4lab.exercises.student import make_student
from tests.test_student_edition import NOTEBOOKS

MODULES = ["welcome", "architecture", "tokenization", "curation", "pretraining", "attention", "interventions",
           "precision", "finetune", "bias", "circuits", "sparse_autoencoders", "attribution_graphs", "evaluation"]


def _double(x):
    return x * 2


def _check_double(fn):
    check_function(fn, _double, [(torch.tensor([1.0, -2.0]),)], name="double",
                   mistakes={"you added instead of multiplying": lambda x: x + 2})


@pytest.fixture
def notebook():
    """A fake notebook namespace with the checks module's `check_double` made to stand alone."""
    checks = {"__name__": "fake_checks", "check_double": _check_double}
    _check_double.__module__ = "fake_checks"
    standalone.stand_alone(checks, {"double": _double})
    ns = {"__name__": "__main__"}
    exec("def double(x):\n    '''Twice x.'''\n    raise NotImplementedError('exercise: write your solution here')\n", ns)
    yield ns, checks["check_double"]
    standalone._ATTEMPTED.discard("double")
    standalone._REFERENCES.pop("double")


def test_a_stub_is_reported_on_stderr_and_the_reference_stands_in(notebook, capsys):
    ns, check = notebook
    stub = ns["double"]
    assert check(stub) is None                                   # no exception: Run All goes on
    out = capsys.readouterr()
    assert "double is not written yet" in out.err and "use phi4lab's reference" in out.err
    assert ns["double"] is not stub
    assert torch.equal(ns["double"](torch.tensor([3.0])), torch.tensor([6.0]))
    assert "using phi4lab's reference for double" in capsys.readouterr().out
    # the stand-in never passes its check
    check(ns["double"])
    assert "double is not written yet" in capsys.readouterr().err
    # a written answer takes the name back, and a wrong one still raises with its diagnosis
    exec("def double(x):\n    return x + 2\n", ns)
    with pytest.raises(ExerciseFailure, match="added instead of multiplying"):
        check(ns["double"])
    exec("def double(x):\n    return 2 * x\n", ns)
    check(ns["double"])
    assert "\N{CHECK MARK} double" in capsys.readouterr().out


def test_a_not_implemented_error_from_deeper_down_is_not_a_stub(notebook):
    ns, check = notebook
    exec("def scale(x, k):\n    raise NotImplementedError('no such kernel')\n\n"
         "def double(x):\n    return scale(x, 2)\n", ns)
    with pytest.raises(ExerciseFailure, match="not the stub's own raise"):
        check(ns["double"])
    assert ns["double"].__name__ == "double" and not hasattr(ns["double"], standalone.STANDS_IN)


def test_reveal_waits_for_an_attempt_and_is_off_in_graded_assignments(notebook, capsys, monkeypatch):
    ns, check = notebook
    standalone.reveal("double")
    assert "Try double first" in capsys.readouterr().out
    check(ns["double"])                                           # a stub is not an attempt
    capsys.readouterr()
    standalone.reveal("double")
    assert "Try double first" in capsys.readouterr().out
    exec("def double(x):\n    return x + 2\n", ns)
    with pytest.raises(ExerciseFailure):
        check(ns["double"])
    standalone.reveal(ns["double"])
    assert "return x * 2" in capsys.readouterr().out
    monkeypatch.setattr(standalone, "REVEAL", False)
    standalone.reveal("double")
    assert capsys.readouterr().out.startswith("Solutions are not revealed")


def _stub_signatures() -> dict[str, list[str]]:
    sigs = {}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and "# SOLUTION" in cell.source:
                for node in ast.parse(cell.source).body:
                    if isinstance(node, ast.FunctionDef):
                        sigs[node.name] = [a.arg for a in node.args.args]
    return sigs


def test_every_reference_takes_the_learners_arguments():
    for module in MODULES:
        importlib.import_module(f"phi4lab.exercises.{module}")
    sigs = _stub_signatures()
    for name, reference in standalone._REFERENCES.items():
        assert name in sigs, f"a reference for {name!r}, but no exercise defines it"
        params = inspect.signature(reference).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        assert len(required) <= len(sigs[name]) <= len(positional), (name, sigs[name], [p.name for p in positional])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_a_later_cell_uses_has_a_stand_in(path):
    """A demo cell that calls a learner's function must get a reference when the exercise is skipped."""
    student, _ = make_student(nbformat.read(path, as_version=4))
    stubs, missing = {}, []
    module = None
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        if module is None and "from phi4lab.exercises import" in cell.source:
            module = importlib.import_module(
                "phi4lab.exercises." + cell.source.split("from phi4lab.exercises import ")[1].split()[0])
        tree = ast.parse(cell.source)
        if "NotImplementedError" in cell.source:
            stubs.update({n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))})
            continue
        statements = tree.body
        if "check" in cell.metadata.get("tags", []):      # what a check cell does besides calling its check
            statements = [s for s in statements if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                                                        and ast.unparse(s.value.func).startswith("checks."))]
        used = {n.id for s in statements for n in ast.walk(s) if isinstance(n, ast.Name)} & set(stubs)
        missing += [name for name in used if name not in standalone._REFERENCES]
    assert module is not None and isinstance(module, types.ModuleType)
    assert not missing, f"later cells use {sorted(set(missing))} with no reference to stand in for a stub"


def test_the_references_written_for_standing_in_pass_their_own_checks(tiny_model, capsys):
    from phi4lab.exercises import architecture, evaluation, finetune, interventions, precision, pretraining
    from tests.test_exercises_04_pretraining import small_model

    architecture.check_block(architecture.block_forward_reference)
    architecture.check_forward(architecture.forward_reference)
    interventions.check_zero_head_hook(interventions.zero_head_hook_reference)
    interventions.check_patch_position_hook(interventions.patch_position_hook_reference)
    precision.check_kahan_sum(precision.kahan_sum_reference)
    precision.check_stable_softmax(precision.stable_softmax_reference)
    precision.check_to_bfloat16(precision.to_bfloat16_reference)
    finetune.check_fraction_explained(finetune.fraction_explained_reference)
    pretraining.check_sliding_perplexity(pretraining.sliding_perplexity_reference, small_model)
    evaluation.check_zero_heads_hook(evaluation.zero_heads_hook_reference, tiny_model)
    out = capsys.readouterr()
    assert out.err == "" and out.out.count("\N{CHECK MARK}") == 10, out
