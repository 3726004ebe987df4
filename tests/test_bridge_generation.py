"""Generation through the bridge: Hugging Face's generate with its KV cache must see the prompt.

transformers 5.24 passes the cache to attention as ``cache=``; TransformerLens 4.3's bridge reads
``past_key_values=``. Without phi4lab's adapter (``model.bridge._pass_kv_cache``) the cached run
attends over the new token alone and writes text unrelated to the prompt.
"""

import torch
from transformers import Phi3ForCausalLM

import phi4lab
from phi4lab.model.bridge import unwrap
from phi4lab.paths import DATA_DIR
from phi4lab.training.finetune import plain_copy

PROMPT = "    def close(self):\n        self._closed = True\n\n    def close"


def generate(hf, ids, use_cache):
    out = hf.generate(ids, max_new_tokens=12, do_sample=False, use_cache=use_cache, pad_token_id=4095)
    return out[0, ids.shape[1]:].tolist()


def test_cached_generation_equals_uncached_and_plain_hugging_face(tiny_model):
    ids = torch.tensor([tiny_model.tokenizer.encode(PROMPT)])
    plain = Phi3ForCausalLM.from_pretrained(DATA_DIR / "phi4-tiny").eval()
    with torch.no_grad():
        reference = generate(plain, ids, use_cache=True)
        assert generate(unwrap(tiny_model), ids, use_cache=True) == reference
        assert generate(unwrap(tiny_model), ids, use_cache=False) == reference


def test_a_wrapped_fine_tuned_copy_generates_with_its_cache(tiny_model):
    """phi4lab.wrap of a model from phi4lab.training.finetune is a new bridge: it gets the adapter too."""
    ids = torch.tensor([tiny_model.tokenizer.encode(PROMPT)])
    copy = phi4lab.wrap(plain_copy(tiny_model), tiny_model.tokenizer, "copy")
    with torch.no_grad():
        reference = generate(plain_copy(tiny_model), ids, use_cache=True)
        assert generate(unwrap(copy), ids, use_cache=True) == reference
        assert generate(unwrap(copy), ids, use_cache=False) == reference
