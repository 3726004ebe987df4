"""The training loop: loss, accumulation, precision, resume, refusal, perplexity, accelerate."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phi4lab.model.config import scaled
from phi4lab.model.loading import random_hf_model
from phi4lab.model.memory import InsufficientMemoryError
from phi4lab.training.loop import CheckpointCorruptError, TrainConfig, TrainingDivergedError, lm_loss, perplexity, train

V = 97


def small_model(seed=0):
    return random_hf_model(scaled(d_model=32, n_layers=2, n_kv_heads=1, vocab_size=V), seed=seed)


def batches(batch=4, seq=16, seed=0):
    def get(i):
        g = torch.Generator().manual_seed(seed * 7919 + i)
        return torch.randint(0, V, (batch, seq), generator=g)
    return get


def quiet(**kw):
    base = dict(steps=4, lr=1e-2, warmup_steps=1, log_every=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_lm_loss_is_hugging_face_loss():
    model = small_model()
    x = batches()(0)
    out = model(x, labels=x)
    torch.testing.assert_close(lm_loss(out.logits, x), out.loss)


def test_training_overfits_one_batch():
    model = small_model()
    fixed = batches()(0)
    history = train(model, lambda i: fixed, quiet(steps=60, lr=3e-3, warmup_steps=5))
    assert history[0]["loss"] > math.log(V) - 0.5
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert [r["step"] for r in history] == list(range(1, 61))


def test_grad_accumulation_equals_the_big_batch():
    big = batches(batch=8)
    halves = lambda i: big(i // 2)[(i % 2) * 4:(i % 2) * 4 + 4]
    a, b = small_model(), small_model()
    # LARS without weight decay is plain SGD with momentum: its update is proportional to the
    # gradient. (Adam divides by sqrt(v), which turns float rounding in near-zero gradients into
    # full-size steps of either sign, so it can't show equality this tightly.)
    sgd = dict(steps=3, grad_clip=None, optimizer="lars", weight_decay=0.0, lr=0.5)
    train(a, big, quiet(**sgd))
    train(b, halves, quiet(grad_accum=2, **sgd))
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-5, msg=name)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight = small_model()
    train(straight, batches(), quiet(steps=6))
    interrupted = small_model()
    data = batches()

    def dies_at_step_5(i):
        if i == 4:
            raise KeyboardInterrupt      # the power goes out during step 5
        return data(i)

    with pytest.raises(KeyboardInterrupt):
        train(interrupted, dies_at_step_5, quiet(steps=6, checkpoint_every=3, out_dir=str(tmp_path)))
    # a new process builds a fresh model and calls train again with the same config
    fresh = small_model(seed=123)
    history = train(fresh, batches(), quiet(steps=6, out_dir=str(tmp_path)))
    assert [r["step"] for r in history] == list(range(1, 7))
    for p, q in zip(straight.parameters(), fresh.parameters()):
        torch.testing.assert_close(p, q)
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["checksums.json", "history.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    log = json.loads((tmp_path / "metrics.json").read_text())
    assert log["config"]["steps"] == 6 and len(log["history"]) == 6


@pytest.mark.parametrize("legacy", [False, True], ids=["checkpoint-counts-tokens", "older-checkpoint"])
def test_resumed_token_counts_are_those_of_an_uninterrupted_run(tmp_path, legacy):
    # checkpoints every 2 steps, logs every 3: the checkpoint at step 4 is newer than its last record (step 3)
    straight = train(small_model(), batches(), quiet(steps=6, log_every=3))
    data = batches()

    def dies_at_step_5(i):
        if i == 4:
            raise KeyboardInterrupt
        return data(i)
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), dies_at_step_5, quiet(steps=6, log_every=3, checkpoint_every=2, out_dir=str(tmp_path)))
    if legacy:                                  # a checkpoint written before it recorded its token count
        state = tmp_path / "checkpoint" / "trainer_state.json"
        meta = json.loads(state.read_text())
        del meta["tokens"]
        state.write_text(json.dumps(meta))
        (tmp_path / "checkpoint" / "checksums.json").unlink()       # nor checksums
    resumed = train(small_model(seed=123), batches(), quiet(steps=6, log_every=3, out_dir=str(tmp_path)))
    assert [(r["step"], r["tokens"]) for r in resumed] == [(r["step"], r["tokens"]) for r in straight] == [(3, 192), (6, 384)]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_modes_train(precision):
    model = small_model()
    fixed = batches()(0)
    history = train(model, lambda i: fixed, quiet(steps=25, lr=3e-3, precision=precision))
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    assert all(p.dtype == torch.float32 for p in model.parameters()), "master weights stay fp32"
    if precision == "fp16":
        assert history[-1]["loss_scale"] > 0


def test_too_big_a_run_is_refused_before_training():
    model = small_model()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(InsufficientMemoryError, match="training"):
        train(model, batches(), quiet(), memory_budget_bytes=10_000)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="precision"):
        train(small_model(), batches(), quiet(precision="fp8"))


def _direct_nll(model, stream, length):
    total, count = 0.0, 0
    for begin in range(0, len(stream), length):
        window = stream[begin:begin + length][None]
        if window.shape[1] < 2:
            break
        out = model(window, labels=window)
        n = window.shape[1] - 1
        total += out.loss.item() * n
        count += n
    return total, count


def test_perplexity_matches_direct_computation():
    model = small_model().eval()
    stream = batches(batch=1, seq=100)(0)[0]
    with torch.no_grad():
        total, count = _direct_nll(model, stream, 32)
        res = perplexity(model, stream, max_length=32, stride=32)
        strided = perplexity(model, stream, max_length=32, stride=8)
    assert res["tokens"] == count
    assert res["loss"] == pytest.approx(total / count, rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert strided["tokens"] == len(stream) - 1, "each token after the first is scored exactly once"
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, stream, max_length=32, stride=64)
    # token streams are often kept as int32; the result must not depend on it
    assert perplexity(model, stream.to(torch.int32), max_length=32, stride=32) == res


def test_a_tied_model_checkpoints_and_resumes(tmp_path):
    """phi4-tiny's warm-up ties lm_head to the embedding: safetensors refuses shared storage unless copied."""
    def tied(seed):
        m = small_model(seed)
        m.lm_head.weight = m.model.embed_tokens.weight
        return m

    straight = tied(0)
    train(straight, batches(), quiet(steps=4))
    first = tied(0)
    train(first, batches(), quiet(steps=2, out_dir=str(tmp_path)))
    resumed = tied(123)                 # extends the 2-step run to 4 steps: a changed setting, asked for
    train(resumed, batches(), quiet(steps=4, out_dir=str(tmp_path)), allow_changed_settings=True)
    assert resumed.lm_head.weight is resumed.model.embed_tokens.weight, "loading must not untie"
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)


SCRIPT = Path(__file__).with_name("accelerate_train_script.py")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU (gloo) path")
def test_loop_runs_unchanged_under_accelerate_with_two_processes(tmp_path):
    """`accelerate launch` with 2 processes on the CPU (gloo): same weights as one process, same global batch.

    On a machine without GPUs, accelerate's multi-process launcher (torchrun underneath) starts the
    processes, and phi4lab.training.loop's Accelerator(cpu=True) joins them as a MULTI_CPU group.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = tmp_path / "one.safetensors"
    two = tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(SCRIPT), str(one)], check=True, env=env, timeout=300)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              str(SCRIPT), str(two)]
    done = subprocess.run(launch, env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank=0 world=2 type=DistributedType.MULTI_CPU" in done.stdout, done.stdout
    assert "rank=1 world=2" in done.stdout
    from safetensors.torch import load_file
    a, b = load_file(one), load_file(two)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    # and training did move the weights
    start = small_model().state_dict()
    assert any(not torch.allclose(start[k], a[k]) for k in a)


KILLER = Path(__file__).with_name("kill_during_checkpoint.py")


@pytest.mark.slow
@pytest.mark.parametrize("event", ["mid-write", "before-swap", "after-old-rename", "after-final-rename",
                                   "during-old-delete"])
def test_a_kill_at_any_point_of_a_checkpoint_save_resumes_to_the_same_weights(tmp_path, event):
    """A real kill -9 of a training process in each window of the second save (step 4 of 6)."""
    straight = small_model()
    train(straight, batches(), quiet(steps=6))
    env = dict(os.environ, PYTHONPATH=str(KILLER.parent), OMP_NUM_THREADS="1")
    killed = subprocess.run([sys.executable, str(KILLER), str(tmp_path), event], env=env, timeout=300,
                            capture_output=True, text=True)
    assert killed.returncode == -9, (killed.returncode, killed.stdout, killed.stderr[-2000:])
    # a new process resumes from the newest complete checkpoint: step 4 if its write had finished, else 2
    resumed, data, asked = small_model(seed=123), batches(), []

    def counting(i):
        asked.append(i)
        return data(i)
    history = train(resumed, counting, quiet(steps=6, checkpoint_every=2, out_dir=str(tmp_path)))
    resumed_at = 2 if event == "mid-write" else 4          # not step 0: no work is redone, none lost
    assert asked[1:] == list(range(resumed_at, 6)), asked  # asked[0] is the memory probe
    assert history[-1]["step"] == 6 and [r["step"] for r in history] == list(range(1, 7))
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]


def test_a_damaged_checkpoint_is_refused_with_the_file_named(tmp_path):
    train(small_model(), batches(), quiet(steps=2, checkpoint_every=2, out_dir=str(tmp_path)))
    weights = tmp_path / "checkpoint" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10                                  # a flipped bit in the last tensor's data
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=r"model.safetensors does not match the checksum"):
        train(small_model(), batches(), quiet(steps=4, out_dir=str(tmp_path)))


def test_nan_weights_in_a_checkpoint_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    train(small_model(), batches(), quiet(steps=2, checkpoint_every=2, out_dir=str(tmp_path)))
    ckpt = tmp_path / "checkpoint"
    weights = load_file(ckpt / "model.safetensors")
    name = next(k for k in weights if "mlp" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, ckpt / "model.safetensors")
    (ckpt / "checksums.json").unlink()                # as an older checkpoint, without checksums, would be
    with pytest.raises(CheckpointCorruptError, match=f"NaN or inf in .*{name}"):
        train(small_model(), batches(), quiet(steps=4, out_dir=str(tmp_path)))


def test_a_non_finite_loss_stops_training_before_the_update_and_keeps_the_last_checkpoint(tmp_path):
    model = small_model()
    data = batches()

    def poisoned(i):                                  # from step 4 on, a weight turns to NaN mid-run
        if i == 3:
            with torch.no_grad():
                model.lm_head.weight[0, 0] = float("nan")       # every position's softmax sees it
        return data(i)
    with pytest.raises(TrainingDivergedError, match=r"step 4: the loss is nan.*checkpoint, is untouched"):
        train(model, poisoned, quiet(steps=6, checkpoint_every=2, out_dir=str(tmp_path)))
    history = train(small_model(seed=5), batches(), quiet(steps=6, out_dir=str(tmp_path)))   # from step 2's checkpoint
    assert [r["step"] for r in history] == list(range(1, 7)) and all(math.isfinite(r["loss"]) for r in history)


def test_a_resume_under_other_settings_is_refused_with_the_differences_listed(tmp_path):
    from phi4lab.training.loop import ResumeSettingsError
    train(small_model(), batches(), quiet(steps=4, checkpoint_every=2, out_dir=str(tmp_path)))
    before = (tmp_path / "checkpoint" / "model.safetensors").read_bytes()
    model = small_model(seed=7)
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ResumeSettingsError, match=r"lr: 0\.01 in the checkpoint, 0\.001 now; optimizer: 'adamw' in "
                                                  r"the checkpoint, 'lamb' now.*allow_changed_settings=True"):
        train(model, batches(), quiet(steps=6, lr=1e-3, optimizer="lamb", out_dir=str(tmp_path)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in untouched.items())     # nothing was loaded
    assert (tmp_path / "checkpoint" / "model.safetensors").read_bytes() == before     # nor written
    # cosine decay depends on the run's length: a longer run is another run
    with pytest.raises(ResumeSettingsError, match="steps: 4 in the checkpoint, 8 now"):
        train(small_model(), batches(), quiet(steps=8, out_dir=str(tmp_path)))
    # bookkeeping may change, and the caller may ask to continue
    history = train(small_model(), batches(), quiet(steps=4, log_every=2, out_dir=str(tmp_path)))
    assert history[-1]["step"] == 4
    history = train(small_model(), batches(), quiet(steps=6, lr=1e-3, out_dir=str(tmp_path)),
                    allow_changed_settings=True)
    assert history[-1]["step"] == 6


def test_a_constant_schedule_run_may_be_extended(tmp_path):
    straight = small_model()
    train(straight, batches(), quiet(steps=4, schedule="constant"))
    first = small_model()
    train(first, batches(), quiet(steps=2, schedule="constant", out_dir=str(tmp_path)))
    resumed = small_model(seed=9)
    train(resumed, batches(), quiet(steps=4, schedule="constant", out_dir=str(tmp_path)))
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)


def test_training_estimate_counts_frozen_weights_at_their_own_size():
    """A LoRA model's frozen base needs its weights only, not AdamW's 16 bytes a parameter: on Phi-4 in
    bf16 that is the difference between 29 GB and 235 GB, a GPU that fits and a pre-flight that refuses."""
    from phi4lab.training.loop import training_memory_bytes
    model = small_model()
    all_trained = training_memory_bytes(model, 4, 16)
    n = sum(p.numel() for p in model.parameters())
    frozen = [p for name, p in model.named_parameters() if "mlp" in name]
    for p in frozen:
        p.requires_grad_(False)
    n_frozen = sum(p.numel() for p in frozen)
    assert training_memory_bytes(model, 4, 16) == all_trained - 12 * n_frozen, "frozen fp32: 4 bytes, not 16"
    model.to(torch.bfloat16)
    activations = all_trained - 16 * n
    assert training_memory_bytes(model, 4, 16) == 16 * (n - n_frozen) + 2 * n_frozen + activations


def test_training_works_with_gradients_turned_off_globally():
    """Notebooks call torch.set_grad_enabled(False) at the top; train() must still train."""
    model = small_model()
    fixed = batches()(0)
    with torch.no_grad():
        history = train(model, lambda i: fixed, quiet(steps=3, lr=3e-3))
    assert history[-1]["loss"] < history[0]["loss"]
