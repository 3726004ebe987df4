"""Linear probes: is the subject's gender written in the residual stream, and where?

Take prompts "The queen said that" / "The king said that" and read the
residual stream at the last position after each layer. If a linear function of
that vector predicts the subject's gender on prompts it was not fitted on, the
information is there, linearly, at that layer.

Two probes:

- **Difference of means**: d = mean(female) - mean(male); classify by which
  side of the midpoint a vector's projection on d falls. No fitting beyond two
  means, and (Marks & Tegmark) often the more *causal* direction.
- **Logistic regression** (scikit-learn): the best linear separator, which is
  also the easier one to fool yourself with: in d_model dimensions a flexible
  probe can fit almost any labelling of a few hundred points.

**Control task** (Hewitt & Liang 2019). Give every subject *word* a random
label instead of its gender and fit the same probe. Words recur across frames,
so a probe that memorises word identities scores well on the control task too.
*Selectivity* = accuracy on the real task - accuracy on the control task; a
probe is evidence of a gender feature only as far as it is selective.

Train and test prompts use different frames with the same words, as in the
original control-task design.
"""

from __future__ import annotations

import random

import torch
from transformer_lens.utilities import get_act_name

from phi4lab.bias import data
from phi4lab.bias._batching import batches, encode


def residual_hook(layer: int) -> str:
    """The hook point of residual layer `layer`: 0 is the embedding (before block 0), k the output of block k - 1."""
    return get_act_name("resid_pre", 0) if layer == 0 else get_act_name("resid_post", layer - 1)


@torch.no_grad()
def last_residuals(model, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
    """[n_layers + 1, len(prompts), d_model]: the residual stream at each prompt's last token,
    before layer 0 (the embedding) and after every layer."""
    ids = [encode(model, p, "prompt") for p in prompts]
    n_layers = model.cfg.n_layers
    names = [residual_hook(layer) for layer in range(n_layers + 1)]
    out = torch.empty(n_layers + 1, len(prompts), model.cfg.d_model)
    for batch, tokens in batches(model, ids, batch_size):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        for k, name in enumerate(names):
            out[k, batch] = cache[name][:, -1].float().cpu()
    return out


def gendered_prompts(frames: list[str] | None = None) -> tuple[list[str], torch.Tensor, list[str]]:
    """(prompts, labels 1 = female, subject words) for every gendered noun in every frame."""
    t = data.templates()
    prompts, labels, words = [], [], []
    for frame in frames or t["pronoun_frames"]:
        for female, male in t["gendered_subjects"]:
            for word, label in ((female, 1), (male, 0)):
                prompts.append(data.fill(frame, word))
                labels.append(label)
                words.append(word)
    return prompts, torch.tensor(labels), words


def control_labels(words: list[str], seed: int = 0) -> torch.Tensor:
    """A random 0/1 label per word *type* (the same word always gets the same label), half of each."""
    types = sorted(set(words))
    rng = random.Random(seed)
    labels = [1] * (len(types) // 2) + [0] * (len(types) - len(types) // 2)
    rng.shuffle(labels)
    by_type = dict(zip(types, labels))
    return torch.tensor([by_type[w] for w in words])


def diff_of_means(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean of class 1 minus mean of class 0: the difference-of-means direction (not normalised)."""
    return X[y == 1].mean(0) - X[y == 0].mean(0)


def diff_of_means_accuracy(X_train, y_train, X_test, y_test) -> float:
    """Accuracy of classifying by projection on the difference of means, split at the class means' midpoint."""
    d = diff_of_means(X_train, y_train)
    midpoint = ((X_train[y_train == 1].mean(0) + X_train[y_train == 0].mean(0)) / 2) @ d
    return ((X_test @ d > midpoint).long() == y_test).float().mean().item()


def logistic_accuracy(X_train, y_train, X_test, y_test, C: float = 1.0) -> float:
    """Test accuracy of an L2-regularised logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    probe.fit(X_train.double().numpy(), y_train.numpy())
    return float(probe.score(X_test.double().numpy(), y_test.numpy()))


def probe_accuracies(X_train, y_train, words_train, X_test, y_test, words_test, seed: int = 0,
                     C: float = 1.0) -> dict:
    """Held-out accuracy of both probes on the real labels and on the control task, and their selectivity."""
    control = control_labels(list(words_train) + list(words_test), seed)
    c_train, c_test = control[:len(words_train)], control[len(words_train):]
    row = {"mean_diff": diff_of_means_accuracy(X_train, y_train, X_test, y_test),
           "mean_diff_control": diff_of_means_accuracy(X_train, c_train, X_test, c_test),
           "logistic": logistic_accuracy(X_train, y_train, X_test, y_test, C),
           "logistic_control": logistic_accuracy(X_train, c_train, X_test, c_test, C)}
    row["selectivity_mean_diff"] = row["mean_diff"] - row["mean_diff_control"]
    row["selectivity_logistic"] = row["logistic"] - row["logistic_control"]
    return row


def probe_layers(model, train_frames: list[str] | None = None, test_frames: list[str] | None = None,
                 seed: int = 0, C: float = 1.0) -> dict:
    """Per layer (0 = embedding): accuracy of both probes on the real and the control task, and selectivity.

    By default the first 12 pronoun frames train and the other 5 test.
    """
    frames = data.templates()["pronoun_frames"]
    train_frames, test_frames = train_frames or frames[:12], test_frames or frames[12:]
    if set(train_frames) & set(test_frames):
        raise ValueError("train and test frames overlap: a probe must be tested on frames it has not seen")
    p_tr, y_tr, w_tr = gendered_prompts(train_frames)
    p_te, y_te, w_te = gendered_prompts(test_frames)
    X_tr, X_te = last_residuals(model, p_tr), last_residuals(model, p_te)
    rows = [{"layer": layer, **probe_accuracies(X_tr[layer], y_tr, w_tr, X_te[layer], y_te, w_te, seed, C)}
            for layer in range(X_tr.shape[0])]
    return {"layers": rows, "direction": [diff_of_means(X_tr[k], y_tr) for k in range(X_tr.shape[0])],
            "train_prompts": len(p_tr), "test_prompts": len(p_te)}
