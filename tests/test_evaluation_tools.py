"""Contamination experiments, grounding tools, judgments and MinHash: phi4lab.evaluation beyond scoring."""

import math

import pytest
import torch

from phi4lab.analysis.interventions import ablation_hooks
from phi4lab.evaluation import contamination, decontamination, grounding, harness, judgments
from phi4lab.evaluation.tasks import Item

# ---- planted contamination -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_detector_finds_exactly_the_planted_items(training_split):
    """Leaked copies of a third of the cloze items, mixed into Shakespeare from the training split:
    Phi-4's check flags those and no others (the recipe checked every item clean against that split)."""
    cloze = harness.items("shakespeare_cloze")
    planted = contamination.plant(cloze, 40, seed=1)
    leaked = [contamination.item_text(it) for it in cloze if it.id in planted]
    background = [d.text for d in training_split if d.domain == "prose"][:8]
    docs = contamination.mixture(background, leaked, copies=2, seed=1)
    verdicts = decontamination.decontaminate({it.id: contamination.item_text(it) for it in cloze}, docs)
    assert {v.item for v in verdicts if v.status != "clean"} == planted
    assert all(v.thirteen_gram for v in verdicts if v.item in planted)


@pytest.fixture(scope="module")
def built_corpus():
    from phi4lab.recipes.corpus import build_corpus

    return build_corpus(progress=False)


@pytest.fixture(scope="module")
def training_split(built_corpus):
    return built_corpus.train


def test_plant_and_mixture_are_seeded_and_checked():
    items = harness.items("stdlib_calls")
    assert contamination.plant(items, 10, seed=3) == contamination.plant(items, 10, seed=3)
    assert contamination.plant(items, 10, seed=3) != contamination.plant(items, 10, seed=4)
    with pytest.raises(ValueError, match="between 1 and"):
        contamination.plant(items, len(items))
    docs = contamination.mixture(["a", "b"], ["x"], copies=3, seed=0)
    assert sorted(docs) == ["a", "b", "x", "x", "x"]
    assert contamination.item_text(items[0], "").endswith(items[0].choices[items[0].answer])


def test_inflation_subtracts_the_clean_change_and_brackets_it():
    ids = [f"i{k}" for k in range(40)]
    planted = set(ids[:20])
    before = [0.0] * 40
    after = [1.0 if k < 10 else 0.0 for k in range(20)] + [1.0 if k < 4 else 0.0 for k in range(20)]
    out = contamination.inflation(before, after, ids, planted)
    assert out["planted_after"] == 0.5 and out["clean_after"] == 0.2
    assert out["inflation"] == pytest.approx(0.3)
    assert out["low"] < 0.3 < out["high"]
    with pytest.raises(ValueError, match="both planted and clean"):
        contamination.inflation(before, after, ids, set(ids))


# ---- grounding --------------------------------------------------------------------------------------------


def test_retriever_ranks_the_passage_with_the_query_terms_first():
    passages = ["def close(self): self._closed = True", "import os\nimport sys", "for key in sorted(d): print(key)"]
    r = grounding.Retriever(passages)
    assert r.search("self._closed", 1)[0][0] == 0
    assert [i for i, _ in r.search("sorted keys", 3)][0] == 2
    with pytest.raises(ValueError, match="k must be"):
        r.search("x", 4)
    with pytest.raises(ValueError, match="non-empty"):
        grounding.Retriever(["", "a"])


def test_abstention_shares():
    answers = [grounding.Answer("a", -0.1, True), grounding.Answer("b", -0.5, False),
               grounding.Answer("c", -2.0, True), grounding.Answer("d", -3.0, False)]
    out = grounding.abstention(answers, -0.5)
    assert out == {"correct": 0.25, "incorrect": 0.25, "not_attempted": 0.5, "correct_given_attempted": 0.5}
    assert math.isnan(grounding.abstention(answers, 0.0)["correct_given_attempted"])


def test_layer_three_holds_the_induction_heads(tiny_model):
    scores = grounding.induction_score_table(tiny_model)
    heads = grounding.induction_heads(tiny_model, threshold=0.4)
    assert {layer for layer, _ in heads} == {3} and len(heads) == 8
    assert [float(scores[h]) for h in heads] == sorted((float(scores[h]) for h in heads), reverse=True)
    assert float(scores[:3].max()) < 0.2


def test_ablation_hooks_zero_exactly_the_listed_heads_during_generation(tiny_model):
    """The hooks answer_all is given: on hook_z they zero the listed heads and leave the others alone,
    and inside ``model.hooks`` they reach the Hugging Face forward passes of greedy decoding too."""
    item = harness.items("stdlib_recall")[0]
    heads = [(3, 0), (3, 7), (2, 3)]
    seen = {2: [], 3: []}

    def watcher(layer):
        def watch(z, hook):
            seen[layer].append(z.clone())
        return watch
    watchers = [(f"blocks.{layer}.attn.hook_z", watcher(layer)) for layer in (2, 3)]
    with torch.no_grad():
        grounding.answer_all(tiny_model, [item], [item.context], max_new_tokens=3,
                             fwd_hooks=ablation_hooks(tiny_model, heads) + watchers)
    for layer in (2, 3):
        steps = seen[layer]
        assert len(steps) >= 2                                # the prompt, then each generated token
        for z in steps:
            zeroed = [h for h in range(8) if (layer, h) in heads]
            assert (z[:, :, zeroed] == 0).all() and (z[:, :, [h for h in range(8) if h not in zeroed]] != 0).any()
    with pytest.raises(IndexError, match="layers 0..3"):
        ablation_hooks(tiny_model, [(9, 0)])


@pytest.mark.slow
def test_grounded_answers_beat_closed_book_and_need_layer_three(tiny_model):
    items = harness.items("stdlib_recall")[:40]
    contexts = [it.context for it in items]
    with torch.no_grad():
        grounded = grounding.answer_all(tiny_model, items, contexts)
        closed = grounding.answer_all(tiny_model, items)
        ablated = grounding.answer_all(tiny_model, items, contexts,
                                       fwd_hooks=ablation_hooks(tiny_model, [(3, h) for h in range(8)]))
    right = [sum(a.correct for a in answers) for answers in (grounded, closed, ablated)]
    assert right[0] > right[1] + 3 and right[0] > right[2] + 3, right


def test_answer_all_checks_its_contexts(tiny_model):
    with pytest.raises(ValueError, match="contexts for"):
        grounding.answer_all(tiny_model, [Item("a", "", question="x", answers=["y"])], ["one", "two"])


# ---- judgments ----------------------------------------------------------------------------------------------


def test_cohen_kappa_equals_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    a, b = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1], [1, 0, 0, 1, 0, 1, 1, 0, 1, 0]
    assert judgments.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert judgments.cohen_kappa([1, 1], [1, 1]) == 1.0
    with pytest.raises(ValueError):
        judgments.cohen_kappa([1], [1, 0])


def test_shipped_judgments_and_their_agreement():
    rows = harness.shipped_judgments()
    assert len(rows) == 80 and len({r.id for r in rows}) == 80
    assert {r.id for r in rows} == {it.id for it in harness.items("stdlib_recall")}
    agreement = judgments.agreement(rows)
    assert agreement["exact_match"]["kappa"] > agreement["f1"]["kappa"] > agreement["rouge_l"]["kappa"]
    assert judgments.rouge_l("[]", "[]") == 0.0           # rouge-score keeps only letters and digits
    assert judgments.rouge_l("os.path.abspath(dst)", "os.path.abspath(src)") == pytest.approx(0.75)


def test_a_malformed_judgment_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"id": "a", "question": "q", "reference": "r", "answer": "r", "label": 2}\n')
    with pytest.raises(ValueError, match="line 1: field 'label'"):
        judgments.load(path)


# ---- MinHash ------------------------------------------------------------------------------------------------


def test_minhash_estimates_the_jaccard_of_character_shingles():
    a = "Virginity breeds mites, much like a cheese; consumes itself to the very paring"
    b = "Virginity breeds mites, much as a cheese does; it eats itself down to the very rind"
    exact = decontamination.jaccard(a, b)
    assert 0.2 < exact < 0.8
    assert decontamination.minhash_similarity(a, b, num_perm=512) == pytest.approx(exact, abs=3 * math.sqrt(exact * (1 - exact) / 512))
    assert decontamination.decontaminate({"a": a}, [b])[0].status == "clean"      # what n-grams miss


# ---- the recipe ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_recipe_rebuilds_the_shipped_task_files_bit_for_bit(tiny_model, built_corpus, tmp_path):
    from phi4lab.recipes import evals

    # the play left out has its other edition in the training split, as the recipe says
    names = {d.name for d in built_corpus.train}
    assert all(other in names for other in evals.SAME_PLAY_IN_TRAINING.values())
    written = evals.write(evals.build_items(built_corpus, tiny_model.tokenizer), tmp_path)
    assert {p.name for p in written} == {f for f in harness.TASK_FILES if f != "judgments.jsonl"}
    for path in written:
        assert path.read_bytes() == (harness.TASK_DIR / path.name).read_bytes(), path.name


def test_every_shipped_choice_splits_cleanly_from_its_context(tiny_model):
    """The recipe's filter, re-checked on the shipped files: lm-eval would stop on an item that fails it."""
    from phi4lab.recipes.evals import splits_cleanly

    for name in ("shakespeare_cloze", "stdlib_calls"):
        delimiter = harness.delimiter(name)
        for it in harness.items(name):
            assert all(splits_cleanly(tiny_model.tokenizer, it.context, delimiter + c) for c in it.choices), it.id
