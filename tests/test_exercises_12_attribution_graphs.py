"""Notebook 12's checks: each passes its reference and names each listed mistake."""

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.dictionaries import evaluate, files, graphs
from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import attribution_graphs as graph_ex

TABLE = [(graph_ex.check_transcoder_predict, graph_ex.PREDICT_MISTAKES),
         (graph_ex.check_frozen_attention, graph_ex.FROZEN_MISTAKES),
         (graph_ex.check_influence, graph_ex.INFLUENCE_MISTAKES),
         (graph_ex.check_scores, graph_ex.SCORES_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


@pytest.fixture(scope="module")
def induction(tiny_model):
    first = torch.randint(10, 4000, (8,), generator=torch.Generator().manual_seed(3))
    replacement = graphs.ReplacementModel(tiny_model, files.shipped_transcoders(), torch.cat([first, first[:-1]]))
    return replacement, replacement.attribute()


def test_checks_pass_their_references(tiny_model, induction, capsys):
    replacement, graph = induction
    tc, _ = files.shipped_transcoder(2)
    reads, writes = evaluate.transcoder_hooks(2)
    _, cache = tiny_model.run_with_cache(torch.randint(10, 4000, (4, 33), generator=torch.Generator().manual_seed(0)))
    x, y = cache[reads][:, 1:].reshape(-1, 192), cache[writes][:, 1:].reshape(-1, 192)
    graph_ex.check_transcoder_predict(graph_ex._predict_ref, tc, x, y)
    graph_ex.check_frozen_attention(graph_ex._frozen_ref, replacement)
    graph_ex.check_edge(graph_ex._edge_ref, replacement, graph)
    graph_ex.check_influence(graph_ex._influence_ref)
    graph_ex.check_scores(graph_ex._scores_ref, graph)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 8      # 5 checks, 3 with a second line


def test_the_edge_check_names_a_zero_and_a_sign_error(induction):
    replacement, graph = induction

    def zero(*args):
        return 0.0

    def negated(*args):
        return -graph_ex._edge_ref(*args)

    with pytest.raises(ExerciseFailure, match="Yours is zero"):
        graph_ex.check_edge(zero, replacement, graph)
    with pytest.raises(ExerciseFailure, match="wrong sign"):
        graph_ex.check_edge(negated, replacement, graph)
