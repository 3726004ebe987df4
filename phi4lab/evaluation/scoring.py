"""Benchmark scoring written to be read: what a harness computes for each item, by hand.

A language model does not "answer" a multiple-choice question. A harness asks it how likely each
choice is as a continuation of the question, and takes the likeliest:

* **acc**: the choice with the largest summed log-probability, log p(c₁..cₙ | context) = Σ log p(cᵢ | context, c<ᵢ).
  Long choices are penalised: every extra token multiplies in another probability below 1.
* **acc_norm**: the same sum divided by the choice's length in characters, lm-evaluation-harness's
  length normalisation (it counts characters of the choice string, not tokens, so that two
  tokenizers score the same text alike).
* **perplexity** per domain: exp of minus the mean log-probability, per word, per byte, or as bits
  per byte, over passages scored in windows of at most the model's context (lm-eval's
  ``loglikelihood_rolling``: disjoint windows, the first one conditioned on a prefix token).
* **exact match** for generated answers: greedy decoding until a stop string, then a comparison.

The details that decide whether two implementations agree to the last item are lm-eval's, copied
here as conventions, not code (``tests/test_evaluation_harness.py`` checks every shipped task):

1. context and continuation are tokenized *together*, and the continuation's tokens are what is
   left after the context's own tokens (a word's first token often merges with the space before it);
   trailing spaces of the context move to the continuation first;
2. the choice is preceded by the task's ``target_delimiter`` (a space by default; "" for code);
3. the input is the last ``max_length + 1`` tokens of context + continuation, minus the very last.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import torch

from phi4lab.model.bridge import logits_of, unwrap


def mean_stderr(values) -> tuple[float, float]:
    """The mean and its standard error, sample standard deviation (n - 1) over √n, as lm-eval reports it."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        raise ValueError(f"a standard error needs at least two items, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd / math.sqrt(n)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens), split the way lm-eval splits them (points 1 above)."""
    if not context:
        raise ValueError("the context is empty: score against a prefix token instead (see rolling_loglikelihood)")
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    n_context = len(tokenizer.encode(context))
    return whole[:n_context], whole[n_context:]


def _max_length(model) -> int:
    return int(model.cfg.n_ctx)


@torch.no_grad()
def continuation_logprobs(model, context: str, continuation: str) -> tuple[torch.Tensor, bool]:
    """Log-probabilities of each continuation token given what precedes it, and whether greedy
    decoding would have produced exactly these tokens (lm-eval's ``is_greedy``)."""
    ctx, cont = encode_pair(model.tokenizer, context, continuation)
    if not cont:
        raise ValueError(f"the continuation {continuation!r} adds no tokens to the context")
    n = _max_length(model)
    if len(cont) > n:
        raise ValueError(f"the continuation has {len(cont)} tokens, more than the model's context of {n}")
    if len(ctx) + len(cont) > n + 1:
        warnings.warn(f"context + continuation is {len(ctx) + len(cont)} tokens; the context's first "
                      f"{len(ctx) + len(cont) - n - 1} are cut, as lm-eval cuts them", stacklevel=2)
    tokens = (ctx + cont)[-(n + 1):][:-1]
    logits = logits_of(model, torch.tensor([tokens]))[0, -len(cont):].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(cont)
    chosen = logprobs.gather(1, target[:, None])[:, 0]
    return chosen, bool((logprobs.argmax(-1) == target).all())


@dataclass
class ChoiceScores:
    """One multiple-choice item, scored."""

    loglikelihoods: list[float]     # summed log-probability of each choice
    lengths: list[int]              # each choice's length in characters (acc_norm's denominator)
    answer: int

    @property
    def pred(self) -> int:
        return max(range(len(self.loglikelihoods)), key=lambda i: self.loglikelihoods[i])

    @property
    def pred_norm(self) -> int:
        return max(range(len(self.loglikelihoods)), key=lambda i: self.loglikelihoods[i] / self.lengths[i])

    @property
    def acc(self) -> float:
        return float(self.pred == self.answer)

    @property
    def acc_norm(self) -> float:
        return float(self.pred_norm == self.answer)


def score_choices(model, context: str, choices: list[str], answer: int, delimiter: str = " ") -> ChoiceScores:
    """Every choice's log-likelihood after the context and the delimiter."""
    lls = [float(continuation_logprobs(model, context, delimiter + c)[0].sum()) for c in choices]
    return ChoiceScores(lls, [len(c) for c in choices], answer)


def score_multiple_choice(model, items, delimiter: str = " ", progress: bool = False) -> dict:
    """acc and acc_norm with standard errors over task items (``tasks.load_task(..., "multiple_choice")``)."""
    from tqdm.auto import tqdm

    scored = [score_choices(model, it.context, it.choices, it.answer, delimiter)
              for it in tqdm(items, desc="scoring", disable=not progress)]
    acc, acc_se = mean_stderr([s.acc for s in scored])
    norm, norm_se = mean_stderr([s.acc_norm for s in scored])
    return {"acc": acc, "acc_stderr": acc_se, "acc_norm": norm, "acc_norm_stderr": norm_se, "items": scored}


@torch.no_grad()
def rolling_loglikelihood(model, text: str) -> float:
    """log p(text) scored in disjoint windows of the model's context, the first conditioned on the
    tokenizer's BOS token (or EOS when it has none), as lm-eval's ``loglikelihood_rolling`` does.
    An empty text is refused (lm-eval would score it 0.0, which no perplexity should average in)."""
    tok = model.tokenizer
    tokens = tok.encode(text)
    if not tokens:
        raise ValueError("the text is empty")
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    n = _max_length(model)
    total, predicted = 0.0, 0
    while predicted < len(tokens):
        end = min(len(tokens), predicted + n)
        inputs = ([prefix] + tokens)[:end] if predicted == 0 else tokens[end - n - 1:end - 1]
        targets = tokens[predicted:end]
        logits = logits_of(model, torch.tensor([inputs]))[0, -len(targets):].float()
        total += float(torch.log_softmax(logits, -1).gather(1, torch.tensor(targets)[:, None]).sum())
        predicted = end
    return total


def perplexities(model, texts: list[str]) -> dict:
    """Word perplexity, byte perplexity and bits per byte over the texts, as lm-eval aggregates them
    (total log-likelihood over total words, or bytes; words are what ``re.split(r"\\s+")`` gives)."""
    lls = [rolling_loglikelihood(model, t) for t in texts]
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    total = sum(lls)
    return {"word_perplexity": math.exp(-total / words), "byte_perplexity": math.exp(-total / n_bytes),
            "bits_per_byte": -total / n_bytes / math.log(2), "loglikelihoods": lls}


@torch.no_grad()
def greedy(model, prompt: str, max_new_tokens: int = 32, stop: str = "\n", fwd_hooks=()) -> tuple[str, float]:
    """The greedy continuation of `prompt` up to (not including) `stop`, and its mean log-probability
    per generated token, the stop's and an end-of-text's included (a confidence: near 0 when the model
    was sure of every token).

    One forward pass over the prompt, then one per new token, reusing the keys and values of the
    tokens before it (the KV cache, as Hugging Face's ``generate`` does). ``fwd_hooks`` (TransformerLens
    hook pairs) stay on for every pass, so an ablation applies to the prompt and to the answer."""
    tok = model.tokenizer
    tokens = tok.encode(prompt)
    if not tokens:
        raise ValueError("the prompt is empty")
    hf = unwrap(model)
    device = next(hf.parameters()).device
    room = _max_length(model) - max_new_tokens                # lm-eval keeps the prompt's last tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room in a {_max_length(model)}-token context")
    ids = torch.tensor([tokens[-room:]], device=device)
    generated, logprobs, past = [], [], None
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for _ in range(max_new_tokens):
            out = hf(ids, cache=past, use_cache=True)
            past = out.past_key_values
            step = torch.log_softmax(out.logits[0, -1].float(), -1)
            nxt = int(step.argmax())
            logprobs.append(float(step[nxt]))
            if nxt == tok.eos_token_id:           # the model ended its answer (generate stops here too)
                break
            generated.append(nxt)
            if stop and stop in tok.decode(generated, skip_special_tokens=True):
                break
            ids = torch.tensor([[nxt]], device=device)
    text = tok.decode(generated, skip_special_tokens=True)     # as lm-eval decodes its generations
    cut = text.find(stop) if stop else -1
    return (text[:cut] if cut >= 0 else text), sum(logprobs) / len(logprobs)
