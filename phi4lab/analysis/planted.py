"""A Phi-4-architecture model whose heads were set by hand: detectors with a known answer.

A head detector run on a trained model gives scores, but is the top head
really a previous-token head, or is the detector wrong? Here the answer is
known, because we write the weights ourselves. The model is a real
``Phi3ForCausalLM`` (RMSNorm, rotary embeddings, grouped-query attention),
2 layers of 4 query heads over 2 key/value heads, head size 32, with:

=========  ===============  ==================================================
head       job              how the weights do it
=========  ===============  ==================================================
L0H0       previous token   constant query and key, rotated so RoPE scores
                            peak at a distance of exactly 1
L0H2       attention sink   constant query; the key reads a marker only the
                            BOS token has
L1H1       duplicate token  query and key both read the token's identity
L1H3       induction        query reads the token; key reads "the token before
                            me", which L0H0 wrote; value copies the token, and
                            the unembedding reads the copy: the model predicts
                            repeated text
=========  ===============  ==================================================

All other heads have zero queries (so they attend uniformly) and write nothing.

The residual stream (d_model 128) is laid out by hand, one subspace per
meaning:

- dim 0: a constant 1 (something for constant queries and keys to read);
- dim 1: the BOS marker (4 for BOS; chosen so BOS has the same norm as any
  other token, which keeps RMSNorm's scale identical at every position);
- dims 2-17: the token's identity, a row of a 16 x 16 Hadamard matrix (16
  ordinary tokens, mutually orthogonal);
- dims 18-33: the previous token's identity (written by L0H0);
- dims 34-49: the predicted next token (written by L1H3).

Rotary embeddings rotate each pair of query/key dims (j, j + 16) by an angle
proportional to position, fast for small j and very slowly for large j
(with theta 250,000, pairs 8-15 turn less than 0.002 rad per token). A head
that should match *content* uses the slow pairs, where position barely
matters. A head that should match *position* uses the fast pairs: if the
query is (1, 0) and the key is the same vector turned by one token's angle,
their product is largest when the key is exactly one token back.
"""

from __future__ import annotations

import torch

N_TOKENS = 16               # ordinary tokens 0..15
BOS_ID = 16
VOCAB = 32                  # ids 17..31 exist but have zero embeddings
D_MODEL, HEAD_DIM = 128, 32
CONST, MARKER, TOKEN, PREV, PRED = 0, 1, slice(2, 18), slice(18, 34), slice(34, 50)
FAST_PAIRS = (0, 1)                          # the two fastest-turning rotary pairs
SLOW = list(range(8, 16)) + list(range(24, 32))   # 8 slow pairs = 16 dims, nearly position-free

PLANTED = {"previous_token": (0, 0), "sink": (0, 2), "duplicate_token": (1, 1), "induction": (1, 3)}


def hadamard(n: int) -> torch.Tensor:
    """Sylvester's construction: an n x n matrix of +-1 with orthogonal rows (n a power of 2)."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def planted_config():
    from phi4lab.model.config import scaled
    return scaled(d_model=D_MODEL, n_layers=2, n_kv_heads=2, num_attention_heads=4, vocab_size=VOCAB,
                  bos_token_id=BOS_ID, eos_token_id=BOS_ID, pad_token_id=BOS_ID)


def planted_hf_model():
    """The hand-set Phi3ForCausalLM (eager attention, fp32)."""
    from phi4lab.model.loading import random_hf_model

    cfg = planted_config()
    model = random_hf_model(cfg)
    codes = hadamard(N_TOKENS)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        core = model.model
        emb = core.embed_tokens.weight
        emb[:N_TOKENS, CONST] = 1.0
        emb[:N_TOKENS, TOKEN] = codes
        emb[BOS_ID, CONST], emb[BOS_ID, MARKER] = 1.0, 4.0       # norm sqrt(17), like every token
        # After RMSNorm a stream of norm sqrt(17) over 128 dims is scaled by sqrt(128 / 17).
        s0 = (D_MODEL / 17) ** 0.5
        s1 = (D_MODEL / 33) ** 0.5          # layer 1 input: token + previous-token codes
        inv_freq = core.rotary_emb.inv_freq
        for layer in core.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        core.norm.weight.fill_(1.0)

        def qkv(layer):
            w = core.layers[layer].self_attn.qkv_proj.weight          # rows: 4 Q heads, 2 K heads, 2 V heads
            q = w[: 4 * HEAD_DIM].view(4, HEAD_DIM, D_MODEL)
            k = w[4 * HEAD_DIM: 6 * HEAD_DIM].view(2, HEAD_DIM, D_MODEL)
            v = w[6 * HEAD_DIM:].view(2, HEAD_DIM, D_MODEL)
            o = core.layers[layer].self_attn.o_proj.weight.view(D_MODEL, 4, HEAD_DIM)
            return q, k, v, o

        # L0H0, previous token (KV head 0). Query (a, 0) in each fast pair; key
        # the same turned by one token's angle. q.k = a^2 sum cos((1 - distance) * angle).
        q, k, v, o = qkv(0)
        a = 7.0 / s0
        for j in FAST_PAIRS:
            q[0, j, CONST] = a
            k[0, j, CONST] = a * torch.cos(inv_freq[j])
            k[0, j + HEAD_DIM // 2, CONST] = a * torch.sin(inv_freq[j])
        v[0, :16, TOKEN] = torch.eye(16) / s0                  # read the token's code...
        o[PREV, 0, :16] = torch.eye(16)                        # ...write it to the previous-token subspace
        # L0H2, attention sink (KV head 1): a constant query meets a key only BOS has.
        q[2, SLOW[0], CONST] = 2.0
        k[1, SLOW[0], MARKER] = 2.0

        # Layer 1 reads the stream after layer 0, which now also holds PREV.
        q, k, v, o = qkv(1)
        b = 1.8 / s1
        for i, dim in enumerate(SLOW):
            # L1H1, duplicate token (KV head 0): query and key both = this token's code.
            q[1, dim, 2 + i] = b
            k[0, dim, 2 + i] = b
            # L1H3, induction (KV head 1): query = this token, key = the token before the key.
            q[3, dim, 2 + i] = b * 1.5
            k[1, dim, 18 + i] = b * 1.5
        v[1, :16, TOKEN] = torch.eye(16) / s1                  # the attended token's code...
        o[PRED, 3, :16] = torch.eye(16)                        # ...becomes the prediction
        model.lm_head.weight[:N_TOKENS, PRED] = codes          # logit of t = code_t . prediction
    return model.eval()


def planted_model():
    """The hand-set model as a phi4lab/TransformerLens bridge (hook names, run_with_cache, ...)."""
    from phi4lab.model.bridge import bridge
    from phi4lab.model.tokenizer import phi4_tokenizer
    return bridge(planted_hf_model(), phi4_tokenizer(), "phi4lab-planted-heads")


def repeated_prompt(period: int = 8, repeats: int = 2, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """BOS, then a random segment of distinct ordinary tokens repeated: [batch, 1 + period * repeats]."""
    if not 1 <= period <= N_TOKENS:
        raise ValueError(f"period must be 1..{N_TOKENS} (the planted model knows {N_TOKENS} tokens)")
    g = torch.Generator().manual_seed(seed)
    segment = torch.stack([torch.randperm(N_TOKENS, generator=g)[:period] for _ in range(batch)])
    bos = torch.full((batch, 1), BOS_ID)
    return torch.cat([bos, segment.repeat(1, repeats)], 1)
