"""phi4lab's attribution graphs against circuit-tracer's, on the same model, transcoders and prompt.

circuit-tracer 0.5.0 (https://github.com/safety-research/circuit-tracer) needs transformers <= 4.57.3
and huggingface-hub < 1, so it cannot live in phi4lab's environment. This script runs in two:

    # 1. in phi4lab's environment: the prompt, the transcoders, and phi4lab's graph
    .venv/bin/python benchmarks/circuit_tracer_crosscheck.py export build/ct-check
    # 2. in a separate one (made once):
    #    python -m venv /tmp/ctv && /tmp/ctv/bin/pip install torch==2.13.0 circuit-tracer==0.5.0 "transformers<=4.57.3"
    /tmp/ctv/bin/python benchmarks/circuit_tracer_crosscheck.py compare build/ct-check

Step 2 builds phi4-tiny as a TransformerLens ``HookedTransformer`` (TransformerLens 3's, through its
own Phi-3 weight conversion; ``rope_theta`` is set explicitly, since transformers 4 reads phi4-tiny's
``rope_parameters`` as 10,000), wraps phi4lab's transcoders as circuit-tracer
``SingleLayerTranscoder`` objects reading ``mlp.hook_in`` and writing ``hook_mlp_out``, runs
``circuit_tracer.attribute`` on the same tokens with the same logit targets, and compares node by
node: the active features, every edge between nodes both graphs have, and the replacement and
completeness scores (circuit-tracer's ``compute_graph_scores``). It is not part of the test suite.

Conventions matched on purpose: circuit-tracer leaves position 0 out of the graph (no features there,
its error zeroed), so phi4lab's graph is built with ``ignore_first=True``, and the prompt starts with
phi4-tiny's BOS token, as circuit-tracer's own tokenisation would make it. circuit-tracer's TopK keeps
the k largest pre-activations whatever their sign, phi4lab's the k largest after a ReLU; the wrapper
below applies the ReLU too, so both models compute the same transcoders.

Last line: ``features_match=... max_edge_diff=... replacement_phi4lab=... replacement_ct=...
completeness_phi4lab=... completeness_ct=...``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def export(out: Path) -> None:
    import phi4lab
    from phi4lab.dictionaries import files, graphs

    out.mkdir(parents=True, exist_ok=True)
    model = phi4lab.load("phi4-tiny")
    first = torch.randint(10, 4000, (8,), generator=torch.Generator().manual_seed(3))
    tokens = torch.cat([torch.tensor([model.tokenizer.bos_token_id]), first, first[:-1]])
    transcoders = files.shipped_transcoders()
    graph = graphs.attribute(model, transcoders, tokens, ignore_first=True)
    replacement, completeness = graph.scores()
    keep, edges = graph.prune()
    torch.save({"tokens": tokens, "adjacency": graph.adjacency,
                "nodes": [(n.kind, -1 if n.layer is None else n.layer, n.pos, n.index, n.value) for n in graph.nodes],
                "transcoders": {layer: {name: getattr(tc, name).detach().clone() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
                                | {"k": tc.k} for layer, tc in transcoders.items()}}, out / "phi4lab.pt")
    summary = {"replacement": replacement, "completeness": completeness, "kept_nodes": int(keep.sum()),
               "kept_edges": int(edges.sum())}
    (out / "phi4lab.json").write_text(json.dumps(summary, indent=1))
    print(f"phi4lab: {len(graph.nodes)} nodes, replacement {replacement:.4f}, completeness {completeness:.4f}; "
          f"written to {out}")


def compare(out: Path) -> None:
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_graph_scores, prune_graph
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, TranscoderSet
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.phi3 import convert_phi3_weights
    from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

    mine = torch.load(out / "phi4lab.pt", weights_only=False)
    summary = json.loads((out / "phi4lab.json").read_text())
    folder = ROOT / "data" / "phi4-tiny"
    raw = json.loads((folder / "config.json").read_text())
    theta = raw["rope_parameters"]["rope_theta"]
    hf_cfg = Phi3Config(**{k: v for k, v in raw.items() if k != "rope_parameters"}, rope_theta=theta)
    hf = Phi3ForCausalLM.from_pretrained(folder, config=hf_cfg, torch_dtype=torch.float32).eval()
    cfg = HookedTransformerConfig(
        d_model=hf_cfg.hidden_size, d_head=hf_cfg.hidden_size // hf_cfg.num_attention_heads,
        n_heads=hf_cfg.num_attention_heads, d_mlp=hf_cfg.intermediate_size, n_layers=hf_cfg.num_hidden_layers,
        n_key_value_heads=hf_cfg.num_key_value_heads, n_ctx=hf_cfg.max_position_embeddings, eps=hf_cfg.rms_norm_eps,
        d_vocab=hf_cfg.vocab_size, act_fn=hf_cfg.hidden_act, normalization_type="RMS",
        positional_embedding_type="rotary", rotary_base=theta, use_attn_scale=True, gated_mlp=True,
        parallel_attn_mlp=False, rotary_dim=hf_cfg.hidden_size // hf_cfg.num_attention_heads,
        original_architecture="Phi3ForCausalLM", dtype=torch.float32, device="cpu", model_name="phi4-tiny")

    class ReluTopK(torch.nn.Module):                 # phi4lab's TopK: the k largest after a ReLU
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            x = torch.relu(x)
            values, indices = x.topk(self.k, dim=-1)
            return torch.zeros_like(x).scatter(-1, indices, values)

    sets = {}
    for layer, w in mine["transcoders"].items():
        tc = SingleLayerTranscoder(cfg.d_model, w["W_enc"].shape[1], ReluTopK(w["k"]), layer, device="cpu",
                                   dtype=torch.float32)
        with torch.no_grad():
            tc.W_enc.copy_(w["W_enc"].T)                # circuit-tracer: [d_transcoder, d_model]
            tc.W_dec.copy_(w["W_dec"])
            tc.b_enc.copy_(w["b_enc"])
            tc.b_dec.copy_(w["b_dec"])
        sets[layer] = tc
    transcoders = TranscoderSet(sets, feature_input_hook="mlp.hook_in", feature_output_hook="hook_mlp_out")
    # the weights go in before circuit-tracer wraps the MLPs (which renames their parameters)
    model = TransformerLensReplacementModel(cfg)
    weights = convert_phi3_weights(hf, cfg)
    for layer in range(cfg.n_layers):                  # Phi-3 has no MLP biases; the conversion leaves them out
        weights[f"blocks.{layer}.mlp.b_in"] = torch.zeros(cfg.d_mlp)
        weights[f"blocks.{layer}.mlp.b_out"] = torch.zeros(cfg.d_model)
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("mask", "IGNORE", "rotary_sin", "rotary_cos"))]
    if missing:
        raise SystemExit(f"the TransformerLens copy is missing weights: {missing}")
    model._configure_replacement_model(transcoders)
    # phi4-tiny's tokenizer files are in transformers 5's format; the fast tokenizer reads them directly
    special = json.loads((folder / "tokenizer_config.json").read_text())
    # (set directly: TransformerLens' set_tokenizer reloads a tokenizer by its hub name)
    model.tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                              **{k: special[k] for k in ("bos_token", "eos_token", "pad_token")})
    tokens = mine["tokens"]
    with torch.no_grad():
        gap = (model(tokens[None])[0, -1] - hf(tokens[None]).logits[0, -1]).abs().max().item()
    logit_ids = torch.tensor([n[3] for n in mine["nodes"] if n[0] == "logit"])
    graph = attribute(tokens, model, attribution_targets=logit_ids, batch_size=256)
    ct_replacement, ct_completeness = compute_graph_scores(graph)
    pruned = prune_graph(graph)

    # match the nodes: features by (layer, pos, latent), errors by (layer, pos), tokens by pos, logits by id
    n_layers, T = cfg.n_layers, len(tokens)
    active = graph.active_features[graph.selected_features].tolist()
    ct_keys = ([("feature", *f) for f in active] + [("error", layer, pos) for layer in range(n_layers) for pos in range(T)]
               + [("token", pos) for pos in range(T)] + [("logit", int(t)) for t in logit_ids])
    def key(n):
        kind, layer, pos, index, _ = n
        return {"feature": ("feature", layer, pos, index), "error": ("error", layer, pos), "token": ("token", pos),
                "logit": ("logit", index)}[kind]
    my_keys = [key(n) for n in mine["nodes"]]
    my_index = {k: i for i, k in enumerate(my_keys)}
    common = [(i, my_index[k]) for i, k in enumerate(ct_keys) if k in my_index]
    ct_idx = torch.tensor([c for c, _ in common])
    my_idx = torch.tensor([m for _, m in common])
    features_mine = {k for k in my_keys if k[0] == "feature"}
    features_ct = {k for k in ct_keys if k[0] == "feature"}
    a_ct = graph.adjacency_matrix[ct_idx][:, ct_idx].float()
    a_mine = mine["adjacency"][my_idx][:, my_idx]
    diff = (a_ct - a_mine).abs().max().item()
    scale = a_mine.abs().max().item()
    print(f"logits of the TransformerLens copy against Hugging Face's: largest gap {gap:.2e}")
    print(f"active features: phi4lab {len(features_mine)}, circuit-tracer {len(features_ct)}, "
          f"in both {len(features_mine & features_ct)}")
    print(f"edges between the {len(common)} shared nodes: largest difference {diff:.2e} (largest edge {scale:.2f})")
    print(f"{'':24s}{'phi4lab':>10s}{'circuit-tracer':>16s}")
    print(f"{'replacement score':24s}{summary['replacement']:10.4f}{ct_replacement:16.4f}")
    print(f"{'completeness score':24s}{summary['completeness']:10.4f}{ct_completeness:16.4f}")
    print(f"{'nodes kept by pruning':24s}{summary['kept_nodes']:10d}{int(pruned.node_mask.sum()):16d}")
    print(f"{'edges kept by pruning':24s}{summary['kept_edges']:10d}{int(pruned.edge_mask.sum()):16d}")
    print(f"features_match={features_mine == features_ct} max_edge_diff={diff:.2e} "
          f"replacement_phi4lab={summary['replacement']:.4f} replacement_ct={ct_replacement:.4f} "
          f"completeness_phi4lab={summary['completeness']:.4f} completeness_ct={ct_completeness:.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("export", "compare"):
        sys.exit(__doc__)
    (export if sys.argv[1] == "export" else compare)(Path(sys.argv[2]))
