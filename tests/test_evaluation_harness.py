"""The hand scorers (phi4lab.evaluation.scoring) against lm-evaluation-harness, on every shipped task.

One lm-eval run over all shipped tasks (about 40 s) serves every comparison. If a comparison fails,
the usual cause is a tokenization convention: how the context and the choice are split, the
delimiter between them, or which prefix token the first perplexity window is conditioned on.
"""

import math
import shutil

import pytest
import torch

from phi4lab.evaluation import harness, scoring
from phi4lab.evaluation.tasks import TaskFileError, load_task

pytestmark = pytest.mark.slow

MULTIPLE_CHOICE = [n for n, (_, _, kind) in harness.SHIPPED_TASKS.items() if kind == "multiple_choice"]
EXTRACTIVE = [n for n, (_, _, kind) in harness.SHIPPED_TASKS.items() if kind == "extractive"]
TEXT = [n for n, (_, _, kind) in harness.SHIPPED_TASKS.items() if kind == "text"]


@pytest.fixture(scope="module")
def lm_eval_run(tiny_model):
    torch.set_grad_enabled(False)
    try:
        yield harness.evaluate(tiny_model, list(harness.SHIPPED_TASKS))
    finally:
        torch.set_grad_enabled(True)


def samples(run, name):
    return sorted(run["samples"][f"phi4lab_{name}"], key=lambda s: s["doc_id"])


def metric(run, name, key):
    return run["results"][f"phi4lab_{name}"][key]


def test_every_task_kind_is_shipped():
    assert MULTIPLE_CHOICE and EXTRACTIVE and TEXT


@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
def test_acc_and_acc_norm_equal_lm_eval_on_every_item(tiny_model, lm_eval_run, name):
    with torch.no_grad():
        ours = scoring.score_multiple_choice(tiny_model, harness.items(name), harness.delimiter(name))
    theirs = samples(lm_eval_run, name)
    assert len(theirs) == len(ours["items"])
    for sample, item in zip(theirs, ours["items"]):
        lls = [r[0] for r in sample["filtered_resps"]]
        assert lls == pytest.approx(item.loglikelihoods, abs=1e-4), f"doc {sample['doc_id']}: log-likelihoods differ"
        assert (sample["acc"], sample["acc_norm"]) == (item.acc, item.acc_norm), f"doc {sample['doc_id']}"
    assert ours["acc"] == metric(lm_eval_run, name, "acc,none")
    assert ours["acc_norm"] == metric(lm_eval_run, name, "acc_norm,none")
    assert ours["acc_stderr"] == pytest.approx(metric(lm_eval_run, name, "acc_stderr,none"), rel=1e-12)
    assert ours["acc_norm_stderr"] == pytest.approx(metric(lm_eval_run, name, "acc_norm_stderr,none"), rel=1e-12)
    # acc_norm is not acc under another name on these tasks: some items change their answer
    assert any(item.pred != item.pred_norm for item in ours["items"])


@pytest.mark.parametrize("name", TEXT)
def test_perplexity_equals_lm_eval(tiny_model, lm_eval_run, name):
    with torch.no_grad():
        ours = scoring.perplexities(tiny_model, [item.text for item in harness.items(name)])
    for key in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[key] == pytest.approx(metric(lm_eval_run, name, f"{key},none"), rel=1e-5), key


def test_a_text_longer_than_the_context_is_scored_in_lm_evals_windows(tiny_model):
    """Over three windows of the model's context: ours equals the windows lm-eval's own utilities cut
    (get_rolling_token_windows, then make_disjoint_window), each scored by a plain forward pass."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from phi4lab.model.bridge import logits_of

    n = int(tiny_model.cfg.n_ctx)
    text = " ".join(item.text for item in harness.items("perplexity_code"))
    tokens = tiny_model.tokenizer.encode(text)
    assert len(tokens) > 3 * n
    total = 0.0
    with torch.no_grad():
        windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
            tokens, prefix_token=tiny_model.tokenizer.bos_token_id, max_seq_len=n, context_len=1)]
        assert len(windows) == math.ceil(len(tokens) / n)
        for context, continuation in windows:
            inputs = (context + continuation)[-(n + 1):][:-1]
            lp = torch.log_softmax(logits_of(tiny_model, torch.tensor([inputs]))[0, -len(continuation):], -1)
            total += float(lp.gather(1, torch.tensor(continuation)[:, None]).sum())
        ours = scoring.rolling_loglikelihood(tiny_model, text)
    assert ours == pytest.approx(total, rel=1e-6)


def test_bad_inputs_to_the_scorers(tiny_model):
    with pytest.raises(ValueError, match="empty"):
        scoring.rolling_loglikelihood(tiny_model, "")
    with pytest.raises(ValueError, match="more than the model's context"):
        scoring.continuation_logprobs(tiny_model, "x", " y" * 600)
    with pytest.warns(UserWarning, match="are cut, as lm-eval cuts them"):
        scoring.continuation_logprobs(tiny_model, "x " * 600, "y")


@pytest.mark.parametrize("name", EXTRACTIVE)
def test_greedy_answers_equal_lm_eval_generations(tiny_model, lm_eval_run, name):
    grounded = not name.endswith("closed_book")
    theirs = samples(lm_eval_run, name)
    assert len(theirs) == len(harness.items(name))
    matches = []
    with torch.no_grad():
        for sample, item in zip(theirs, harness.items(name)):
            prompt = f"{item.context}\n{item.question}" if grounded else item.question
            assert sample["arguments"][0][0] == prompt, "the YAML's doc_to_text and ours disagree"
            answer, _ = scoring.greedy(tiny_model, prompt, max_new_tokens=32)
            assert answer == sample["resps"][0][0], f"doc {sample['doc_id']}"
            matches.append(float(answer.strip() == item.answers[0]))
            assert matches[-1] == sample["exact_match"]
    assert sum(matches) / len(matches) == metric(lm_eval_run, name, "exact_match,strip")


def test_grounding_helps_the_recall_task(lm_eval_run):
    """The passage in context is what makes the answers right: phi4-tiny copies lines of code."""
    grounded = metric(lm_eval_run, "stdlib_recall", "exact_match,strip")
    closed = metric(lm_eval_run, "stdlib_recall_closed_book", "exact_match,strip")
    se = metric(lm_eval_run, "stdlib_recall", "exact_match_stderr,strip")
    assert grounded - closed > 2 * se


def test_mean_stderr_is_the_sample_standard_error():
    mean, se = scoring.mean_stderr([1, 0, 0, 1, 1])
    assert mean == 0.6 and se == pytest.approx(math.sqrt(0.3 / 5))
    with pytest.raises(ValueError, match="at least two"):
        scoring.mean_stderr([1])


def test_encode_pair_moves_trailing_spaces_to_the_continuation(tiny_model):
    tok = tiny_model.tokenizer
    ctx, cont = scoring.encode_pair(tok, "To be or not to ", "be")
    assert ctx == tok.encode("To be or not to") and ctx + cont == tok.encode("To be or not to be")
    with pytest.raises(ValueError, match="empty"):
        scoring.encode_pair(tok, "", "be")


def test_a_changed_task_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "evals"
    shutil.copytree(harness.TASK_DIR, copy)
    monkeypatch.setattr(harness, "TASK_DIR", copy)
    assert len(harness.items("shakespeare_cloze")) == 120
    path = copy / "shakespeare_cloze.jsonl"
    path.write_text(path.read_text().replace('"answer": 0', '"answer": 1', 1))
    with pytest.raises(harness.TaskFileChanged, match="shakespeare_cloze.jsonl"):
        harness.items("shakespeare_cloze")
    (copy / "stdlib_calls.jsonl").unlink()
    with pytest.raises(harness.TaskFileChanged, match="missing"):
        harness.task_config("stdlib_calls")


def test_unknown_task_names_the_shipped_ones():
    with pytest.raises(KeyError, match="shakespeare_cloze"):
        harness.items("mmlu")


def test_shipped_tasks_read_strictly():
    for name in harness.SHIPPED_TASKS:
        items = harness.items(name)
        assert len({i.id for i in items}) == len(items)
    with pytest.raises(TaskFileError):
        load_task(harness.TASK_DIR / "stdlib_calls.jsonl", "extractive")
