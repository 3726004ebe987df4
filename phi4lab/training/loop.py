"""A lean training loop for Phi-4-architecture models, in the spirit of nanoGPT.

One step of language-model training is four lines: predict every next token,
measure the cross-entropy, back-propagate, update. Everything else in this file
serves those four lines:

- **The learning-rate schedule** (phi4lab.training.optim.lr_at): warm up linearly, then
  decay. Phi-4 used linear warm-up and decay to a peak of 3e-4.
- **Gradient clipping**: if the gradient's global norm exceeds a bound, scale
  it down, so one bad batch cannot throw the weights far away.
- **Gradient accumulation**: sum the gradients of several micro-batches before
  one update, for a large batch in small memory.
- **Precision**: fp32; bf16 autocast (matmuls in bf16, weights stay fp32); or
  fp16 autocast with a GradScaler, which multiplies the loss by a large factor
  so small fp16 gradients do not flush to zero, and skips steps that overflow.
- **Checkpoints** in safetensors (model and optimizer state, no pickle), and
  resume: batches are a pure function of the step number, so a resumed run
  sees exactly the batches it would have seen.
- **accelerate**: the same loop runs on one CPU, one GPU, or several processes
  under ``accelerate launch`` (DDP). The global batch is split across
  processes, so the result does not depend on how many there are.
- **Evaluation**: sliding-window perplexity per domain (see ``perplexity``).

Usage::

    cfg = TrainConfig(steps=300, lr=1e-3, batch_size=16, seq_len=128)
    history = train(model, lambda step: sample_batch(tokens, step), cfg)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from phi4lab.model.bridge import logits_of
from phi4lab.model.memory import preflight
from phi4lab.training.optim import lr_at, make_optimizer

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: str = "cosine"           # "cosine", "linear" or "constant"
    min_lr_ratio: float = 0.1
    optimizer: str = "adamw"           # "adamw", "lamb" or "lars"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    precision: str = "fp32"            # "fp32", "bf16" or "fp16"
    log_every: int = 10
    eval_every: int = 0                # 0: only at the end (if an evaluate function is given)
    checkpoint_every: int = 0          # 0: only at the end (if out_dir is set)
    out_dir: str | None = None
    seed: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)  # anything the caller wants recorded in the log


def next_token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position next-token cross-entropy, [batch, seq-1]: position t predicts token t+1.

    Logits are upcast to fp32 first: a softmax over 100k classes in bf16 or
    fp16 loses precision that the loss then pretends to have.
    """
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), tokens[:, 1:].flatten(),
                           reduction="none").reshape(tokens.shape[0], -1)


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The training loss: mean next-token cross-entropy over every predicted position."""
    return next_token_losses(logits, tokens).mean()


def training_memory_bytes(model: torch.nn.Module, batch_size: int, seq_len: int, precision: str = "fp32") -> int:
    """A conservative estimate of what a training step needs, to refuse before starting.

    Each trained parameter: weight + gradient + AdamW's two moments (16 bytes in fp32,
    methods: ZeRO's accounting). Each frozen one (a LoRA model's base) only its own
    bytes: on Phi-4 in bf16 that is 29 GB, not 235. Plus the activations: for each layer
    about s*b*h*(34 + 5*a*s/h) bytes per layer in 16-bit (Korthikanti et al. 2022;
    twice that in fp32), and the logits (fp32 upcast, their gradient too).
    """
    weights = sum(16 * p.numel() if p.requires_grad else p.numel() * p.element_size()
                  for p in model.parameters())                       # a tied weight is listed once
    cfg = getattr(model, "config", None)
    scale = 1 if precision in ("bf16", "fp16") else 2      # Korthikanti's count is for 16-bit values
    act = 0
    if cfg is not None:
        b, s, h, a = batch_size, seq_len, cfg.hidden_size, cfg.num_attention_heads
        per_layer = s * b * h * (34 + 5 * a * s / h) * scale
        act = int(cfg.num_hidden_layers * per_layer) + 3 * b * s * cfg.vocab_size * 4
    return weights + act


# --------------------------------------------------------------------------------------
# Checkpoints: safetensors only. Optimizer state is flattened into named tensors, and
# its non-tensor parts (hyper-parameters, step) go into JSON beside it.
# --------------------------------------------------------------------------------------

CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "history.json")


class CheckpointCorruptError(ValueError):
    """A checkpoint file does not match the checksum written with it."""


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or inf; training stopped before that step's update."""


def _fsync(path: Path) -> None:
    # A rename is only durable once the data it points at is on disk, and the directory entry too.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(out_dir: str | os.PathLike, model, optimizer, step: int, history: list[dict], scaler=None,
                    tokens: int | None = None, settings: dict | None = None) -> Path:
    """Write ``out_dir/checkpoint`` so that a kill -9 at any moment leaves a complete checkpoint to resume.

    1. Everything goes to ``checkpoint.tmp``, each file fsynced, and ``checksums.json`` last: a
       folder with valid checksums is complete, one without is not.
    2. The swap: ``checkpoint`` -> ``checkpoint.old``, ``checkpoint.tmp`` -> ``checkpoint``, each
       rename fsynced, then ``checkpoint.old`` deleted. Killed anywhere in between, at least one
       complete folder is left, and ``recover_checkpoint`` resumes from the newest.
    """
    from safetensors.torch import save_file

    from phi4lab.model.integrity import sha256_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "checkpoint.tmp"          # an unfinished write of a killed run is overwritten
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # safetensors refuses two names for one storage, which is what tied weights are
    # (lm_head.weight is embed_tokens.weight); the second name gets its own copy.
    weights, seen = {}, set()
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        weights[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    save_file(weights, tmp / "model.safetensors")
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    save_file(tensors, tmp / "optimizer.safetensors")
    # tokens: how many the run has consumed at `step`; the last log record may be older than the checkpoint.
    # settings: the run's TrainConfig, so that a resume under other settings is noticed.
    meta = dict(step=step, tokens=tokens, param_groups=state["param_groups"], scalars=scalars,
                scaler=scaler.state_dict() if scaler is not None else None, settings=settings)
    (tmp / "trainer_state.json").write_text(json.dumps(meta, default=float))
    (tmp / "history.json").write_text(json.dumps(history))
    for name in CHECKPOINT_FILES:
        _fsync(tmp / name)
    sums = {name: sha256_file(tmp / name) for name in CHECKPOINT_FILES}
    (tmp / "checksums.json").write_text(json.dumps(dict(step=step, sha256=sums)))
    _fsync(tmp / "checksums.json")
    _fsync(tmp)
    final, old = out / "checkpoint", out / "checkpoint.old"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)    # a half-deleted .old of a kill: `final` is complete
        final.rename(old)
        _fsync(out)
    tmp.rename(final)
    _fsync(out)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _complete_step(folder: Path) -> int | None:
    """The step of a checkpoint folder whose files all match its checksums, else None."""
    try:
        _verify(folder)
        return int(json.loads((folder / "checksums.json").read_text())["step"])
    except (CheckpointCorruptError, OSError, ValueError, KeyError, TypeError):
        return None


def _verify(folder: Path) -> None:
    """Raise CheckpointCorruptError naming the first file that is missing or differs from checksums.json."""
    from phi4lab.model.integrity import sha256_file
    try:
        sums = json.loads((folder / "checksums.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointCorruptError(f"{folder / 'checksums.json'} is unreadable: the checkpoint is damaged. "
                                     "Delete the folder to start again.") from None
    for name in CHECKPOINT_FILES:
        if name not in sums or not (folder / name).exists() or sha256_file(folder / name) != sums[name]:
            raise CheckpointCorruptError(
                f"{folder / name} does not match the checksum written with it: the checkpoint is damaged. "
                "Delete the folder to start again, or restore it from a copy.")


def recover_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """After a kill, make ``out_dir/checkpoint`` the newest complete checkpoint and clear the rest.

    Looks at ``checkpoint``, ``checkpoint.tmp`` and ``checkpoint.old``. A folder counts if its
    checksums match (an older checkpoint without checksums counts only as ``checkpoint``). Returns
    the checkpoint to resume from, or None when there is none.
    """
    out = Path(out_dir)
    names = ("checkpoint", "checkpoint.tmp", "checkpoint.old")
    folders = {n: out / n for n in names if (out / n).is_dir()}
    if not folders:
        return None
    steps = {n: _complete_step(f) for n, f in folders.items()}
    legacy = "checkpoint" in folders and not (folders["checkpoint"] / "checksums.json").exists() and all(
        (folders["checkpoint"] / name).exists() for name in CHECKPOINT_FILES)
    complete = {n: s for n, s in steps.items() if s is not None}
    if not complete and not legacy:
        if "checkpoint" in folders:
            _verify(folders["checkpoint"])            # names the damaged file
            raise CheckpointCorruptError(f"{folders['checkpoint']} is incomplete: files are missing and there is "
                                         "no checksums.json. Delete the folder to start again.")
        for f in folders.values():           # only unfinished writes: nothing to resume
            shutil.rmtree(f, ignore_errors=True)
        return None
    if legacy and "checkpoint" not in complete:
        best = "checkpoint"
        if complete and max(complete.values()) > json.loads((folders["checkpoint"] / "trainer_state.json").read_text())["step"]:
            best = max(complete, key=complete.get)
    else:
        best = max(complete, key=lambda n: (complete[n], n == "checkpoint"))
    for n, f in folders.items():
        if n != best:
            shutil.rmtree(f, ignore_errors=True)
    if best != "checkpoint":
        folders[best].rename(out / "checkpoint")
        _fsync(out)
    return out / "checkpoint"


class ResumeSettingsError(ValueError):
    """The checkpoint to resume was saved by a run with other settings. Nothing was loaded."""


# Settings that change what is logged or saved, not what is trained: they may differ on a resume.
BOOKKEEPING = ("log_every", "eval_every", "checkpoint_every", "out_dir", "progress", "extra")


def settings_differences(saved: dict, now: dict) -> list[str]:
    """What differs, setting by setting, between a checkpoint's TrainConfig and a new one.

    `steps` counts only where the schedule depends on it: with a constant learning rate a
    run can be extended, with cosine or linear decay the rates already used were another run's.
    """
    out = []
    for name, new in now.items():
        if name in BOOKKEEPING or name not in saved:
            continue
        old = saved[name]
        if name == "steps" and saved.get("schedule") == now.get("schedule") == "constant":
            continue
        as_json = json.loads(json.dumps(new, default=str))          # tuples read back as lists
        if old != as_json:
            out.append(f"{name}: {old!r} in the checkpoint, {new!r} now")
    return out


def _saved_settings(ckpt: Path, meta: dict) -> dict | None:
    if meta.get("settings") is not None:
        return meta["settings"]
    log = ckpt.parent / "metrics.json"          # older checkpoints: the log written beside them
    try:
        return json.loads(log.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(out_dir: str | os.PathLike, model, optimizer, scaler=None, settings: dict | None = None,
                    allow_changed_settings: bool = False) -> tuple[int, list[dict]]:
    """Restore model and optimizer from ``out_dir/checkpoint``; return (next step, history).

    Each file is checked against the checksums written with it, and the weights must be
    finite: a damaged checkpoint is refused with the file named, never trained on. With
    `settings` (the new run's TrainConfig as a dict), a checkpoint saved under other
    settings is refused with the differences listed, unless allow_changed_settings=True.
    All checks come before anything is loaded into `model` or `optimizer`.
    """
    from safetensors.torch import load_file

    ckpt = Path(out_dir) / "checkpoint"
    if (ckpt / "checksums.json").exists():
        _verify(ckpt)
    meta = json.loads((ckpt / "trainer_state.json").read_text())
    weights = load_file(ckpt / "model.safetensors")
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointCorruptError(f"{ckpt / 'model.safetensors'} holds NaN or inf in {bad[:3]}: "
                                     "resuming would train on them. Delete the checkpoint or restore a good one.")
    saved = _saved_settings(ckpt, meta) if settings is not None else None
    differ = settings_differences(saved, settings) if saved is not None else []
    if differ and not allow_changed_settings:
        raise ResumeSettingsError(
            f"{ckpt} was saved by a run with other settings: " + "; ".join(differ) + ". Resuming would carry "
            "that run on under the new settings. Use another out_dir for a new run, delete the checkpoint to "
            "start again, or pass allow_changed_settings=True to train(...) to continue it anyway. Nothing was loaded.")
    if differ:
        print("continuing the checkpoint's run with changed settings: " + "; ".join(differ))
    model.load_state_dict(weights)
    flat = load_file(ckpt / "optimizer.safetensors")
    state: dict[int, dict] = {}
    for key, value in list(flat.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return meta["step"], json.loads((ckpt / "history.json").read_text())


def _tokens_before(cfg, get_batch, start: int) -> int:
    """Tokens the run consumed before `start`, the step it resumes at.

    The checkpoint says (from this version on). An older one does not, and its last log record
    can predate it (logged at step 448, saved at 512), so the count is replayed from get_batch,
    a pure function of the micro-batch index.
    """
    meta = json.loads((Path(cfg.out_dir) / "checkpoint" / "trainer_state.json").read_text())
    if meta.get("tokens") is not None:
        return int(meta["tokens"])
    return sum(get_batch(i).numel() for i in range(start * cfg.grad_accum))


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------

@torch.enable_grad()             # a notebook may have turned gradients off globally; training needs them
def train(
    model: torch.nn.Module,
    get_batch: Callable[[int], torch.Tensor],
    cfg: TrainConfig,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    callback: Callable[[dict], None] | None = None,
    memory_budget_bytes: int | None = None,
    allow_changed_settings: bool = False,
) -> list[dict]:
    """Train `model` for cfg.steps optimizer steps; return the list of logged metrics.

    get_batch(i) must return the i-th global micro-batch of token ids, shape
    [batch, seq]; step s uses micro-batches s*grad_accum ... s*grad_accum+accum-1.
    evaluate(model) -> dict of metrics, called every cfg.eval_every steps and at the end.
    callback(record) is called with every logged record (a live plot, say).
    If cfg.out_dir holds a checkpoint, training resumes from it, provided it was saved under
    the same settings (bookkeeping such as log_every aside); otherwise the differences are
    listed and nothing runs, unless allow_changed_settings=True.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.steps < 1 or cfg.grad_accum < 1:
        raise ValueError("steps and grad_accum must be at least 1")
    torch.manual_seed(cfg.seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    probe = get_batch(0)
    preflight(training_memory_bytes(model, probe.shape[0], probe.shape[1], cfg.precision),
              what=f"training ({probe.shape[0]} x {probe.shape[1]} tokens per micro-batch, {cfg.precision})",
              device=accelerator.device, budget_bytes=memory_budget_bytes,
              advice="Use a smaller batch or sequence length with grad_accum, or a smaller model.")

    optimizer = make_optimizer(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    dtype = PRECISIONS[cfg.precision]
    device_type = accelerator.device.type
    scaler = torch.amp.GradScaler(device_type) if cfg.precision == "fp16" else None

    start, history = 0, []
    if cfg.out_dir and recover_checkpoint(cfg.out_dir) is not None:
        start, history = load_checkpoint(cfg.out_dir, model, optimizer, scaler, settings=asdict(cfg),
                                         allow_changed_settings=allow_changed_settings)
        accelerator.print(f"resuming from {cfg.out_dir}/checkpoint at step {start}")
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    rank, world = accelerator.process_index, accelerator.num_processes

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=dtype)

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="training",
               disable=not (cfg.progress and accelerator.is_main_process), unit="step")
    tokens_seen = _tokens_before(cfg, get_batch, start) if start else 0
    t0 = time.perf_counter()
    for step in bar:
        lr = lr_at(step, peak=cfg.lr, warmup=cfg.warmup_steps, total=cfg.steps,
                   schedule=cfg.schedule, min_ratio=cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # 1-3. forward, loss, backward: once per micro-batch, gradients add up.
        # kept on the device: a .item() per micro-batch would make a GPU wait for every step
        loss_sum = torch.zeros((), device=accelerator.device)
        for micro in range(cfg.grad_accum):
            batch = get_batch(step * cfg.grad_accum + micro)
            tokens_seen += batch.numel()
            local = batch[rank::world].to(accelerator.device)     # this process's share of the global batch
            sync = micro == cfg.grad_accum - 1
            with (contextlib.nullcontext() if sync else accelerator.no_sync(model)):
                with autocast():
                    loss = lm_loss(logits_of(model, local), local) / cfg.grad_accum
                accelerator.backward(scaler.scale(loss) if scaler else loss)
            loss_sum += loss.detach()
        if not torch.isfinite(loss_sum):
            where = (f"; the last good checkpoint, {Path(cfg.out_dir) / 'checkpoint'}, is untouched"
                     if cfg.out_dir and (Path(cfg.out_dir) / "checkpoint").exists() else "")
            raise TrainingDivergedError(
                f"step {step + 1}: the loss is {loss_sum.item()}, so training stopped before updating the weights"
                f"{where}. Lower the learning rate, clip gradients, check the data, or train in bf16 rather than fp16.")

        # 4. update: unscale (fp16), clip, step (skipped by the scaler on overflow).
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = (accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                     if cfg.grad_clip else torch.tensor(float("nan")))
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            step_loss = loss_sum.item()
            record = dict(step=done, loss=step_loss, lr=lr, grad_norm=float(grad_norm), tokens=tokens_seen,
                          seconds=round(time.perf_counter() - t0, 3))
            if scaler:
                record["loss_scale"] = scaler.get_scale()
            if evaluate and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
                model.eval()
                with torch.no_grad():
                    record.update(evaluate(accelerator.unwrap_model(model)))
                model.train()
            history.append(record)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.1e}")
            if callback and accelerator.is_main_process:
                callback(record)
        if cfg.out_dir and accelerator.is_main_process and (
                (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps):
            save_checkpoint(cfg.out_dir, accelerator.unwrap_model(model), optimizer, done, history, scaler,
                            tokens=tokens_seen, settings=asdict(cfg))
            write_log(cfg, history)
    bar.close()
    model.eval()
    accelerator.wait_for_everyone()
    return history


def write_log(cfg: TrainConfig, history: list[dict]) -> None:
    """metrics.json: the config and every logged record, for plots and for the record."""
    out = Path(cfg.out_dir)
    (out / "metrics.json").write_text(json.dumps(dict(config=asdict(cfg), history=history), indent=1))


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------

@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, max_length: int = 256, stride: int | None = None,
               max_tokens: int | None = None) -> dict:
    """Sliding-window perplexity of a 1-D token stream (the Hugging Face recipe, corrected).

    Windows of `max_length` tokens start every `stride` tokens; each token is
    scored once, in the first window where it is new, so with stride < max_length
    every scored token still sees at least max_length - stride tokens of
    context. NLL is summed per token, not averaged per window (windows differ
    in size). stride = max_length gives non-overlapping windows, which is
    faster and a little pessimistic.
    """
    stride = stride or max_length // 2
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in (0, max_length], got {stride}")
    tokens = tokens.flatten().long()        # token streams are often stored as int32 to save memory
    if max_tokens:
        tokens = tokens[:max_tokens]
    if tokens.numel() < 2:
        raise ValueError("need at least 2 tokens to measure perplexity")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, tokens.numel(), stride):
        end = min(begin + max_length, tokens.numel())
        window = tokens[begin:end].to(device)[None]
        new = end - prev_end                    # tokens not scored by an earlier window
        losses = next_token_losses(logits_of(model, window), window)[0]
        scored = losses[-min(new, losses.numel()):]  # the first token of the stream has no prediction
        nll += scored.sum().item()
        count += scored.numel()
        prev_end = end
        if end == tokens.numel():
            break
    model.train(was_training)
    return dict(loss=nll / count, ppl=math.exp(nll / count), tokens=count)
