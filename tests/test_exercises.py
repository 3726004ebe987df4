"""Exercise machinery: diagnoses, the student edition, and every check failing on stubs."""

import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from phi4lab.exercises import ExerciseFailure, check_function, diagnose, welcome
from phi4lab.exercises.student import MarkerError, build_student_edition, make_student, strip_solutions
from phi4lab.model import config as C

COURSE = Path(__file__).resolve().parents[1] / "course"
NOTEBOOKS = sorted(COURSE.glob("*.ipynb"))
# A cell may take this long before nbclient gives up: the slowest cell (notebook 08's two fine-tunes)
# takes about 70 s on an idle 2-core machine and about twice that with generic kernels; a busy
# machine must not fail the suite. The Makefile gives nbval the same limit (--nbval-cell-timeout).
CELL_TIMEOUT_S = 1800


def rms_norm(x, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_diagnoses_name_the_likely_mistake():
    x = torch.randn(4, 8, dtype=torch.float64) * 1e-3
    outside = lambda x: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + 1e-5)  # noqa: E731
    mistakes = {"is your epsilon inside the square root?": outside}
    with pytest.raises(ExerciseFailure, match="epsilon inside the square root"):
        check_function(outside, rms_norm, [(x,)], mistakes=mistakes)
    assert diagnose(rms_norm(x).T, rms_norm(x)).startswith("wrong shape") and "transposed" in diagnose(rms_norm(x).T, rms_norm(x))
    assert "constant factor" in diagnose(2 * rms_norm(x), rms_norm(x))
    assert "wrong sign" in diagnose(-rms_norm(x), rms_norm(x))
    assert "NaN" in diagnose(torch.full((4, 8), float("nan")), rms_norm(x))
    assert "expected a tensor" in diagnose([1, 2], rms_norm(x))
    assert "largest difference" in diagnose(rms_norm(x) + torch.eye(4, 8), rms_norm(x))
    assert diagnose(rms_norm(x), rms_norm(x)) is None


def test_an_answer_that_writes_into_its_input_fails_and_is_told_so():
    from phi4lab.exercises import architecture as E
    # a wrong answer that zeroes its input used to pass: the reference then saw the zeroed tensor
    with pytest.raises(ExerciseFailure, match=r"changed its input in place \(argument 1\)"):
        E.check_apply_rotary(lambda x, c, s: (x.zero_(), torch.zeros_like(x))[1])

    # a right answer computed in place is told what it did, and the caller's tensors are untouched
    def in_place(x, cos, sin):
        rotated = E.A.apply_rotary(x, cos, sin)
        return x.copy_(rotated)
    with pytest.raises(ExerciseFailure, match="the result is right, but your function changed its input"):
        E.check_apply_rotary(in_place)
    case = torch.ones(3)
    check_function(lambda x: x * 2, lambda x: x * 2, [(case,)], name="double")
    assert torch.equal(case, torch.ones(3))


def test_tolerance_follows_dtype():
    y = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    rounded_early = y.bfloat16() * 3  # one extra bf16 rounding: ~0.4% relative error
    assert diagnose(rounded_early, (y * 3).bfloat16()) is None  # fine for a bf16 answer
    assert diagnose(rounded_early.float(), y * 3) is not None  # far too large for fp32


def test_welcome_checks_pass_the_reference_and_catch_known_mistakes():
    welcome.check_count_parameters(C.count_parameters)
    with pytest.raises(ExerciseFailure, match="grouped-query"):
        welcome.check_count_parameters(welcome._full_kv)
    with pytest.raises(ExerciseFailure, match="only K or only V"):
        welcome.check_kv_cache_bytes_per_token(lambda cfg, b: C.kv_cache_bytes_per_token(cfg, torch.float32) // 8 * b)
    with pytest.raises(ExerciseFailure, match="multiply-adds"):
        welcome.check_forward_flops_per_token(lambda cfg: C.forward_flops_per_token(cfg) // 2)

    def stub(cfg):
        raise NotImplementedError

    with pytest.raises(NotImplementedError, match="still a stub"):
        welcome.check_count_parameters(stub)


def test_strip_solutions():
    src = "def f(x):\n    '''doc'''\n    # SOLUTION\n    return x + 1\n    # END SOLUTION\n\nprint(1)"
    out, n = strip_solutions(src)
    assert n == 1 and "return x + 1" not in out and "'''doc'''" in out
    assert "    raise NotImplementedError" in out
    for bad in ["# SOLUTION\nx", "# END SOLUTION", "# SOLUTION\n# SOLUTION\n# END SOLUTION"]:
        with pytest.raises(MarkerError):
            strip_solutions(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_edition_hides_solutions(path):
    instructor = nbformat.read(path, as_version=4)
    student, n = make_student(instructor)
    assert n >= 2, "every notebook has at least two exercises"
    text = "\n".join(c.source for c in student.cells)
    assert "# SOLUTION" not in text and "END SOLUTION" not in text
    assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
    for cell in student.cells:
        if cell.cell_type == "code" and ("NotImplementedError" in cell.source or "check" in cell.metadata.get("tags", [])):
            assert cell.outputs == []
    # it does not promise the solutions it removed
    prose = " ".join(c.source for c in student.cells if c.cell_type == "markdown")
    assert not re.search(r"solutions? (sits?|are|is) (behind|below|under)", prose, re.I)
    if any("Hints and solutions sit behind" in c.source for c in instructor.cells):
        assert "the worked solutions are in the instructor's edition" in prose


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_check_fails_on_the_student_edition(path, tmp_path):
    counts = build_student_edition(COURSE, tmp_path)
    student = nbformat.read(tmp_path / path.name, as_version=4)
    NotebookClient(student, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(COURSE)}}).execute()
    checks = [c for c in student.cells if "check" in c.metadata.get("tags", [])]
    assert len(checks) == counts[path.name]
    for cell in checks:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"a check passed on a stub:\n{cell.source}"
        assert errors[0].ename in ("NotImplementedError", "ExerciseFailure"), errors[0].ename
    # and the instructor edition's checks all pass (nbval re-runs it in full too)
    instructor = nbformat.read(path, as_version=4)
    for cell in instructor.cells:
        if "check" in cell.metadata.get("tags", []):
            assert any("\N{CHECK MARK}" in o.get("text", "") for o in cell.outputs), cell.source


# ---- notebooks 05, 06, 08, 09: each check passes its reference and names each listed mistake -----

def _mistake_cases():
    from phi4lab.exercises import attention as A
    from phi4lab.exercises import interventions as I
    table = [(A.check_pattern_cache_bytes, A.PATTERN_MISTAKES), (A.check_attention_pattern, A.ATTENTION_MISTAKES),
             (A.check_previous_token_score, A.PREV_MISTAKES), (A.check_induction_score, A.INDUCTION_MISTAKES),
             (I.check_final_norm_logits, I.LENS_MISTAKES), (I.check_component_logits, I.DLA_MISTAKES),
             (I.check_repeat_losses, I.REPEAT_MISTAKES)]
    from phi4lab.exercises import bias as B  # notebooks 08 and 09
    from phi4lab.exercises import finetune as F
    table += [(F.check_lora_parameters, F.LORA_COUNT_MISTAKES), (F.check_merge, F.MERGE_MISTAKES),
              (F.check_attention_change, F.TV_MISTAKES), (F.check_fraction_explained, F.FRACTION_MISTAKES),
              (F.check_assistant_labels, F.LABEL_MISTAKES), (B.check_word_logprob, B.WORD_MISTAKES),
              (B.check_diff_of_means, B.DOM_MISTAKES), (B.check_steering_hook, B.STEER_MISTAKES)]
    return [pytest.param(check, message, wrong, id=f"{check.__name__}-{i}")
            for check, mistakes in table for i, (message, wrong) in enumerate(mistakes.items())]


@pytest.mark.parametrize("check, message, wrong", _mistake_cases())
def test_attention_and_intervention_checks_name_each_mistake(check, message, wrong):
    with pytest.raises(ExerciseFailure) as info:
        check(wrong)
    assert message in str(info.value)


def test_attention_and_intervention_checks_pass_their_references(capsys):
    from phi4lab.analysis import heads
    from phi4lab.exercises import attention as A
    from phi4lab.exercises import interventions as I
    A.check_pattern_cache_bytes(A._pattern_bytes_ref)
    A.check_attention_pattern(A._pattern_ref)
    A.check_previous_token_score(heads.previous_token_scores)
    A.check_induction_score(heads.induction_scores)
    A.check_kv_head_of(A._kv_ref)
    A.check_js_divergence(A._js_ref)
    I.check_final_norm_logits(I._lens_ref)
    I.check_component_logits(I._dla_ref)
    I.check_repeat_losses(I._repeat_ref)
    I.check_patching_recovery(I._recovery_ref)

    def zero_head_hook(head):
        def hook(z, hook):
            z[:, :, head] = 0
            return z
        return hook
    I.check_zero_head_hook(zero_head_hook)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 13   # 11 checks, 2 with a planted-model line



# ---- notebook 01: the reference pieces pass; typical wrong versions get their specific message ----

def _architecture_mistakes():
    import torch.nn.functional as F

    from phi4lab.exercises import architecture as X
    from phi4lab.scratch import architecture as A
    lin = F.linear
    return [
        (X.check_rms_norm, lambda x, w, e: w * (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + e)), "inside the square root"),
        (X.check_rms_norm, lambda x, w, e: A.rms_norm(x, torch.ones_like(w), e), "learned weight"),
        (X.check_apply_rotary, lambda x, c, s: x * c - A.rotate_half(x) * s, "wrong way"),
        (X.check_split_qkv, lambda qkv, H, KV, d: A.split_qkv(torch.cat(
            [qkv[..., KV * d:KV * d + H * d], qkv[..., :KV * d], qkv[..., KV * d + H * d:]], -1), H, KV, d), "Q first"),
        (X.check_repeat_kv, lambda x, n: x.repeat(1, n, 1, 1), "repeat_interleave"),
        (X.check_causal_attention, X._attention_variant(scale=False), "sqrt(d_head)"),
        (X.check_causal_attention, X._attention_variant(mask_diag=True), "attend to itself"),
        (X.check_gated_mlp, lambda x, gu, dn: lin(F.silu(lin(x, gu).chunk(2, -1)[1]) * lin(x, gu).chunk(2, -1)[0], dn),
         "gate first"),
        (X.check_block, lambda x, l, c, s: l.post_attention_layernorm(
            (h := l.input_layernorm(x + l.self_attn(x, c, s))) + l.mlp(h)), "pre-norm"),
        (X.check_forward, lambda m, t: m.lm_head(X._run_blocks(m, t)), "final norm"),
    ]


def test_architecture_checks_pass_the_reference(capsys):
    from phi4lab.exercises import architecture as X
    from phi4lab.scratch import architecture as A
    for check, ref in ((X.check_rms_norm, A.rms_norm), (X.check_rotary_cos_sin, A.rotary_cos_sin),
                       (X.check_apply_rotary, A.apply_rotary), (X.check_split_qkv, A.split_qkv),
                       (X.check_repeat_kv, A.repeat_kv), (X.check_causal_attention, A.causal_attention),
                       (X.check_gated_mlp, A.gated_mlp), (X.check_block, lambda x, layer, c, s: layer(x, c, s)),
                       (X.check_forward, lambda m, t: m(t))):
        check(ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 13


# ---- notebook 07 ---------------------------------------------------------------------------

def _precision_cases():
    import functools
    import math

    from phi4lab.exercises import precision as X
    return [
        (X.check_exponent_mantissa_bits, lambda dt: (torch.finfo(dt).bits - round(-math.log2(torch.finfo(dt).eps)),
                                                      round(-math.log2(torch.finfo(dt).eps))), "sign takes one bit"),
        (X.check_gap_above, lambda x, dt: torch.finfo(dt).eps, "the gap grows"),
        (X.check_kahan_sum, lambda v: functools.reduce(lambda a, b: a + b, v), "naive running sum"),
        (X.check_stable_softmax, lambda x: x.exp() / x.exp().sum(-1, keepdim=True), "subtract each row's max"),
        (X.check_logit_kl, lambda r, o: X._kl_ref(o, r), "arguments are swapped"),
        (X.check_update_scale, lambda s, f, c, g: (s * 2, 0) if f else X._scale_ref(s, f, c, g), "*halves*"),
        (X.check_training_bytes, lambda n, s: n * 12, "two fp32 states"),
    ]


@pytest.mark.parametrize("table, index", [("architecture", i) for i in range(10)] + [("precision", i) for i in range(7)])
def test_notebook_01_and_07_checks_name_typical_mistakes(table, index):
    """Each wrong version gets the message meant for it (notebooks 01 and 07)."""
    check, wrong, words = {"architecture": _architecture_mistakes, "precision": _precision_cases}[table]()[index]
    with pytest.raises(ExerciseFailure, match=re.escape(words)):
        check(wrong)


def test_precision_checks_pass_the_reference(capsys):
    import math

    from phi4lab.exercises import precision as X

    def kahan(values):
        s, c = torch.zeros((), dtype=values.dtype), torch.zeros((), dtype=values.dtype)
        for v in values:
            y = v - c
            t = s + y
            c = (t - s) - y
            s = t
        return s
    X.check_exponent_mantissa_bits(X._bits_ref)
    X.check_gap_above(lambda x, dt: torch.finfo(dt).eps * 2 ** math.floor(math.log2(x)))
    X.check_kahan_sum(kahan)
    X.check_stable_softmax(lambda x: torch.softmax(x, -1))
    X.check_logit_kl(X._kl_ref)
    X.check_update_scale(X._scale_ref)
    X.check_training_bytes(X._train_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 7


# ---- notebooks 08 and 09 -------------------------------------------------------------------------

def test_bias_checks_without_a_reference_table_name_their_mistakes():
    from phi4lab.exercises import bias as B

    def ci(level):
        def fn(values, n, seed):
            g = torch.Generator().manual_seed(seed)
            means = values[torch.randint(0, len(values), (n, len(values)), generator=g)].mean(-1)
            tail = (1 - level) / 2
            return torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=values.dtype)).tolist()
        return fn
    B.check_bootstrap_ci(ci(0.95))
    with pytest.raises(ExerciseFailure, match="97.5th percentiles"):
        B.check_bootstrap_ci(ci(0.90))
    with pytest.raises(ExerciseFailure, match="\\*with\\* replacement"):
        B.check_bootstrap_ci(lambda v, n, s: (v.mean(), v.mean()))
    with pytest.raises(ExerciseFailure, match="word \\*type\\*"):
        B.check_control_labels(lambda words, seed: torch.arange(len(words)) % 2)
    with pytest.raises(ExerciseFailure, match="different seeds"):
        fixed = {"aunt": 1, "king": 1, "man": 0, "queen": 0, "uncle": 1, "woman": 0}
        B.check_control_labels(lambda words, seed: torch.tensor([fixed[w] for w in words]))
    with pytest.raises(ExerciseFailure, match="no slot"):
        B.check_fill_frame(lambda frame, occupation: frame.replace("{occupation}", occupation))
    with pytest.raises(ExerciseFailure, match="in place"):
        def inplace(resid, direction, alpha):
            resid[:, -1] += alpha * direction
            return resid
        B.check_steering_hook(inplace)


def test_finetune_and_bias_checks_pass_their_references(capsys):
    from phi4lab.bias import control_labels
    from phi4lab.exercises import bias as B
    from phi4lab.exercises import finetune as F

    def fill(frame, occupation):
        if frame.count("{occupation}") != 1:
            raise ValueError("needs exactly one {occupation} slot")
        return frame.replace("{occupation}", occupation)
    F.check_lora_parameters(lambda i, o, r: r * (i + o))
    F.check_merge(F._merge_ref)
    F.check_attention_change(F._tv_ref)
    F.check_fraction_explained(lambda b, f, p: (b - p) / (b - f))
    F.check_assistant_labels(F._labels_ref)
    B.check_fill_frame(fill)
    B.check_word_logprob(B._word_ref)
    B.check_bootstrap_ci(lambda v, n, s: B._ci_ref(v, n, s).tolist())
    B.check_diff_of_means(B._dom_ref)
    B.check_control_labels(control_labels)
    B.check_steering_hook(B._steer_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 11


class _AlwaysEqual:
    """An answer whose == says True to anything: it must never pass a check."""
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


def test_checks_refuse_answers_that_only_claim_equality():
    import numpy as np

    from phi4lab.exercises import architecture as EA
    from phi4lab.exercises import curation as EC
    from phi4lab.exercises import welcome as EW
    for check in (EA.check_repeat_kv, EA.check_causal_attention, EC.check_normalise, EW.check_count_parameters):
        with pytest.raises(ExerciseFailure):
            check(lambda *args: _AlwaysEqual())
    # a numpy array or True gets a diagnosis, not "Boolean value of Tensor ... is ambiguous"
    with pytest.raises(ExerciseFailure, match="numpy ndarray"):
        EA.check_repeat_kv(lambda x, n: np.asarray(x.repeat_interleave(n, 1)))
    with pytest.raises(ExerciseFailure, match="got bool True"):
        EA.check_repeat_kv(lambda x, n: True)
    # containers are compared element by element, with the reference's equality
    assert diagnose([torch.ones(2), "a"], [torch.ones(2), "a"]) is None
    assert diagnose([torch.ones(2), _AlwaysEqual()], [torch.ones(2), "a"]) is not None


def test_a_huge_wrong_shaped_answer_is_diagnosed_without_copying_it():
    # A tensor on the meta device has a shape but no data: any conversion or value check
    # on it raises. The old checker converted the answer to float64 (3 GB for a big one)
    # before looking at its shape.
    huge = torch.empty(1024, 1024, 1024, device="meta")
    assert diagnose(huge, torch.zeros(3, 4)).startswith("wrong shape: got (1024, 1024, 1024), expected (3, 4)")


def test_a_wrong_dtype_is_named():
    x = torch.randn(4, 8, dtype=torch.float64)
    message = diagnose(rms_norm(x).half(), rms_norm(x))
    assert "torch.float16" in message and "torch.float64" in message


def test_a_not_implemented_error_inside_the_answer_is_not_called_a_stub():
    def stub(x, n):
        raise NotImplementedError

    def uses_something_unimplemented(x, n):
        def helper():
            raise NotImplementedError("aten::foo is not implemented for 'Half'")
        return helper()

    from phi4lab.exercises import architecture as EA
    with pytest.raises(NotImplementedError, match="still a stub"):
        EA.check_repeat_kv(stub)
    with pytest.raises(ExerciseFailure, match="not the stub's own raise") as info:
        EA.check_repeat_kv(uses_something_unimplemented)
    assert "aten::foo" in str(info.value)
