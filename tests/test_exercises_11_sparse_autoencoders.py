"""Notebook 11's checks: each passes its reference and names each listed mistake."""

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.dictionaries import files
from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import sparse_autoencoders as sae_ex

TABLE = [(sae_ex.check_norms_interference, sae_ex.NORMS_MISTAKES),
         (sae_ex.check_topk, sae_ex.TOPK_MISTAKES),
         (sae_ex.check_sae_forward, sae_ex.SAE_FORWARD_MISTAKES),
         (sae_ex.check_fvu, sae_ex.FVU_MISTAKES),
         (sae_ex.check_shrinkage, sae_ex.SHRINKAGE_MISTAKES),
         (sae_ex.check_encoder_grad, sae_ex.ENCODER_GRAD_MISTAKES),
         (sae_ex.check_aux_loss, sae_ex.AUX_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


@pytest.fixture(scope="module")
def layer2(tiny_model):
    sae, _ = files.shipped_sae("blocks.2.hook_resid_post")
    tokens = torch.randint(10, 4000, (8, 65), generator=torch.Generator().manual_seed(0))
    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.2.hook_resid_post")
    return sae, cache["blocks.2.hook_resid_post"][:, 1:].reshape(-1, 192)


def test_checks_pass_their_references(layer2, capsys):
    sae, acts = layer2
    sae_ex.check_norms_interference(sae_ex._norms_interference_ref)
    sae_ex.check_topk(sae_ex._topk_ref)
    sae_ex.check_sae_forward(sae_ex._sae_forward_ref, sae, acts)
    sae_ex.check_fvu(sae_ex._fvu_ref)
    sae_ex.check_shrinkage(sae_ex._shrinkage_ref)
    sae_ex.check_encoder_grad(sae_ex._encoder_grad_ref)
    sae_ex.check_aux_loss(sae_ex._aux_ref)
    sae_ex.check_ablate_hook(sae_ex._ablate_ref, sae, acts)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 12      # 8 checks, 4 with a second line


def test_the_ablate_hook_check_names_its_mistakes(layer2):
    sae, acts = layer2

    def from_reconstruction(sae, latent):
        def hook(x, hook):
            z = sae.encode(x)
            return sae(x)[0] - z[..., latent:latent + 1] * sae.W_dec[latent]
        return hook

    def unscaled(sae, latent):
        return lambda x, hook: x - sae.W_dec[latent]

    def in_place(sae, latent):
        def hook(x, hook):
            x -= sae.encode(x)[..., latent:latent + 1] * sae.W_dec[latent]
            return x
        return hook

    for wrong, message in ((from_reconstruction, "throws away the SAE's error"), (unscaled, "scale the direction"),
                           (in_place, "in place")):
        with pytest.raises(ExerciseFailure, match=message):
            with torch.no_grad():
                sae_ex.check_ablate_hook(wrong, sae, acts)
