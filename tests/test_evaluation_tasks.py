"""Task files read strictly (every problem named by file, line and field), and SQuAD's exact match and F1."""

import json

import pytest

from phi4lab.evaluation import answers, tasks


def write(tmp_path, rows, name="task.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


MC = {"id": "q1", "context": "Two and two make", "choices": [" four", " five"], "answer": 0}
QA = {"id": 1, "context": "The tower is in Paris.", "question": "Where is the tower?", "answers": ["Paris"]}


def test_good_files_load(tmp_path):
    items = tasks.load_task(write(tmp_path, [MC, {**MC, "id": "q2", "answer": 1}, ""]), "multiple_choice")
    assert [(i.id, i.answer, i.choices) for i in items] == [("q1", 0, [" four", " five"]), ("q2", 1, [" four", " five"])]
    (qa,) = tasks.load_task(write(tmp_path, [QA], "qa.jsonl"), "extractive")
    assert qa.id == "1" and qa.answers == ["Paris"]


@pytest.mark.parametrize("rows, message", [
    ([MC, '{"id": "q2", "context": "x", '], r"line 2: not valid JSON"),
    ([MC, {k: v for k, v in MC.items() if k != "choices"} | {"id": "q2"}], r"line 2: missing field 'choices'"),
    ([{**MC, "choices": []}], r"line 1: field 'choices' must be a non-empty list"),
    ([{**MC, "choices": [" four", ""]}], r"line 1: field 'choices'\[1\] must be a non-empty string"),
    ([MC, MC], r"line 2: duplicated id 'q1' \(first on line 1\)"),
    ([{**MC, "answer": 2}], r"line 1: field 'answer' must be the index of the right choice, an integer in 0..1"),
    ([{**MC, "answer": True}], r"field 'answer'"),
    (["[1, 2]"], r"line 1: each line must be a JSON object, got a list"),
    ([{**MC, "id": ""}], r"field 'id' must be a non-empty string"),
    ([""], r"no items"),
])
def test_every_problem_is_named_with_its_line_and_field(tmp_path, rows, message):
    path = write(tmp_path, rows)
    with pytest.raises(tasks.TaskFileError, match=message) as info:
        tasks.load_task(path, "multiple_choice")
    assert str(path) in str(info.value)


def test_extractive_items_need_a_question_and_answers(tmp_path):
    with pytest.raises(tasks.TaskFileError, match="line 1: field 'answers' must be a non-empty list"):
        tasks.load_task(write(tmp_path, [{**QA, "answers": []}]), "extractive")
    with pytest.raises(tasks.TaskFileError, match="missing field 'question'"):
        tasks.load_task(write(tmp_path, [MC]), "extractive")
    with pytest.raises(tasks.TaskFileError, match="no such task file"):
        tasks.load_task(tmp_path / "nowhere.jsonl", "extractive")
    with pytest.raises(ValueError, match="kind must be one of"):
        tasks.load_task(write(tmp_path, [MC]), "cloze")


def test_text_items_for_perplexity(tmp_path):
    (item,) = tasks.load_task(write(tmp_path, [{"id": "p1", "text": "To be, or not to be"}]), "text")
    assert item.text == "To be, or not to be"
    with pytest.raises(tasks.TaskFileError, match="line 1: field 'text' must be a non-empty string"):
        tasks.load_task(write(tmp_path, [{"id": "p1", "text": "  "}]), "text")
    with pytest.raises(tasks.TaskFileError, match="missing field 'text'"):
        tasks.load_task(write(tmp_path, [MC]), "text")


def test_exact_match_and_f1_as_squad_defines_them():
    assert answers.normalize("The  Eiffel Tower.") == "eiffel tower"
    assert answers.exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert answers.exact_match("Eiffel", ["eiffel tower"]) == 0.0
    # "the cat sat" -> [cat, sat]; "cat sat on a mat" -> [cat, sat, on, mat]: precision 1, recall 1/2
    assert answers.f1("the cat sat", ["cat sat on a mat"]) == pytest.approx(2 / 3)
    assert answers.f1("dog", ["cat sat on a mat"]) == 0.0
    # the best over the references; repeated words count as many times as both have them
    assert answers.f1("cat sat", ["dog", "cat sat on a mat"]) == pytest.approx(2 / 3)
    assert answers.f1("cat cat", ["cat"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert answers.f1("the", ["a"]) == 1.0                 # both normalise to nothing
    with pytest.raises(ValueError, match="at least one reference"):
        answers.f1("x", [])
