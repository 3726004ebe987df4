"""lm-evaluation-harness on phi4lab models and the shipped tasks, offline.

The field scores models with EleutherAI's lm-evaluation-harness (``lm-eval``): the Open LLM
Leaderboard did, and most papers' tables are comparable only because they used it. Its two halves:

* a **model** behind three requests: ``loglikelihood`` (how likely is this continuation?),
  ``loglikelihood_rolling`` (how likely is this whole text?) and ``generate_until``. Its ``HFLM``
  serves them from any Hugging Face causal LM; here, from the ``Phi3ForCausalLM`` inside a phi4lab
  model (the same weights, no copy);
* **tasks** as YAML: where the items are, how an item becomes a prompt (Jinja templates), which
  request it makes and which metrics aggregate the answers.

The tasks in ``data/evals/`` were written for this course (``phi4lab.recipes.evals`` builds their
JSONL files from the corpus's validation split), and their files are pinned by sha256 like every
other shipped file. They load through the ``datasets`` library's local JSON reader, with no hub.
``phi4lab.evaluation.scoring`` computes the same numbers by hand; the tests hold the two equal.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import yaml

from phi4lab.evaluation.tasks import Item, load_task
from phi4lab.model.bridge import unwrap
from phi4lab.model.integrity import check_sha256
from phi4lab.paths import DATA_DIR

TASK_DIR = DATA_DIR / "evals"

# task: (its YAML, the JSONL it reads, the item kind). The JSONL files are pinned in TASK_FILES.
SHIPPED_TASKS: dict[str, tuple[str, str, str]] = {
    "shakespeare_cloze": ("shakespeare_cloze.yaml", "shakespeare_cloze.jsonl", "multiple_choice"),
    "stdlib_calls": ("stdlib_calls.yaml", "stdlib_calls.jsonl", "multiple_choice"),
    "stdlib_recall": ("stdlib_recall.yaml", "stdlib_recall.jsonl", "extractive"),
    "stdlib_recall_closed_book": ("stdlib_recall_closed_book.yaml", "stdlib_recall.jsonl", "extractive"),
    "perplexity_prose": ("perplexity_prose.yaml", "perplexity_prose.jsonl", "text"),
    "perplexity_code": ("perplexity_code.yaml", "perplexity_code.jsonl", "text"),
}
TASK_FILES: dict[str, str] = {
    "shakespeare_cloze.jsonl": "07ac9543457d235378494d02a1580f6c2e2e125d1fda47188f7b408371eb0e3e",
    "stdlib_calls.jsonl": "86a553b9d0ad0008c03fb4a6a3586e4fe44b0b9e768ee761dca21ef1dbcd7504",
    "stdlib_recall.jsonl": "0585d2481ce0de41496f3fc3d1ff437435c676e771d47cf9a94a3d40f09a7cbb",
    "perplexity_prose.jsonl": "3f4b72e288a78bc291b309e5e2f9a4885b3b1f8160f0200476f07d6c573114b9",
    "judgments.jsonl": "69ec1b4dbfc0d835925c11dfb139533ddd106105179337a669b355dcda183fb8",
    "perplexity_code.jsonl": "247b7ed75cb2b511a425a1f51e00d13826058103dbd74d9f361fddf064f4efd5",
}


class TaskFileChanged(ValueError):
    """A shipped task file does not match its pinned sha256."""


def _checked(data_file: str) -> Path:
    path = TASK_DIR / data_file
    if not path.is_file():
        raise TaskFileChanged(f"{path} is missing: restore data/evals from git, or rebuild with `phi4lab build-evals`")
    check_sha256(path, TASK_FILES[data_file], TaskFileChanged, f"task file {data_file}",
                 "restore data/evals from git, or rebuild with `phi4lab build-evals` and update TASK_FILES")
    return path


def _check(name: str) -> tuple[dict, Path, str]:
    if name not in SHIPPED_TASKS:
        raise KeyError(f"no shipped task {name!r}; the tasks are {', '.join(SHIPPED_TASKS)}")
    config_file, data_file, kind = SHIPPED_TASKS[name]
    path = _checked(data_file)
    config = yaml.safe_load((TASK_DIR / config_file).read_text(encoding="utf-8"))
    return config, path, kind


def shipped_judgments() -> list:
    """phi4-tiny's grounded stdlib_recall answers with their hand labels (``evaluation.judgments``), hash-checked."""
    from phi4lab.evaluation.judgments import load

    return load(_checked("judgments.jsonl"))


def items(name: str) -> list[Item]:
    """A shipped task's items, hash-checked and read strictly (``tasks.load_task``)."""
    _, path, kind = _check(name)
    return load_task(path, kind)


def task_config(name: str) -> dict:
    """A shipped task's lm-eval config, its data file hash-checked and named by absolute path."""
    config, path, _ = _check(name)
    config = copy.deepcopy(config)
    config["dataset_kwargs"]["data_files"] = {"test": str(path)}
    return config


def delimiter(name: str) -> str:
    """The text between a task's context and its choice (lm-eval's ``target_delimiter``)."""
    return task_config(name).get("target_delimiter", " ")


def harness_model(model, batch_size: int = 16):
    """lm-eval's HFLM around the Hugging Face model inside a phi4lab model (shared weights)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return HFLM(pretrained=unwrap(model), tokenizer=model.tokenizer, batch_size=batch_size,
                max_length=int(model.cfg.n_ctx), device=str(next(unwrap(model).parameters()).device))


def evaluate(model, names: list[str], *, lm=None, limit: int | None = None, log_samples: bool = True) -> dict:
    """Run lm-eval's ``simple_evaluate`` on shipped tasks. Returns its results dict: ``results``
    (per task: each metric and its ``_stderr``) and, with log_samples, ``samples`` (per item)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    configs = [task_config(n) for n in names]
    # include_defaults=False: index none of lm-eval's thousands of built-in task files (half a minute
    # here), only the configs given
    return simple_evaluate(model=lm or harness_model(model), tasks=configs, limit=limit, log_samples=log_samples,
                           task_manager=TaskManager(include_defaults=False),
                           bootstrap_iters=100, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                           fewshot_random_seed=0, verbosity="ERROR")


def table(results: dict) -> str:
    """One line per task and metric: value ± standard error, as lm-eval's table shows them."""
    rows = []
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if key == "alias" or "_stderr" in key or not isinstance(value, float):
                continue
            metric, _, filt = key.partition(",")
            se = metrics.get(f"{metric}_stderr,{filt}")
            se_text = f" ± {se:.3f}" if isinstance(se, float) else ""
            rows.append(f"{task:<40} {metric:<16} {value:.3f}{se_text}")
    return "\n".join(rows)
