"""Superposition, where the features are known: Elhage et al. 2022's toy model, written to be read.

"Toy Models of Superposition" (https://transformer-circuits.pub/2022/toy_model/) asks how a model
can represent more features than it has dimensions. The toy model squeezes n features into m < n
dimensions and back:

    h  = W x                       W: [m, n], one column W_i per feature
    x' = ReLU(W^T h + b)

trained to reconstruct x, with feature i weighted by its *importance* I_i in the loss
sum_i I_i (x_i - x'_i)^2. Each feature is zero with probability S (its *sparsity*) and otherwise
uniform in [0, 1].

What it learns depends on S:

* **dense features** (S near 0): the m most important features get orthogonal directions and the
  rest are dropped, as a principal-component analysis would do;
* **sparse features** (S near 1): many more than m features are stored, in directions that
  overlap. Two features rarely fire together, so the interference between them mostly lands
  below the ReLU's threshold and is cut off. That is **superposition**, and it is why an SAE
  needs more latents than the residual stream has dimensions.

``phase_diagram`` reproduces the paper's smallest case: 2 features in 1 dimension, with feature 2's
importance and the features' density varied. Feature 2 is either ignored, stored in superposition
with feature 1 (the two columns point in opposite directions), or given the one dimension alone.
Many models with different settings train at once, as a batch of independent "instances".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


def sample_features(n_instances: int, batch: int, n_features: int, density: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """[batch, n_instances, n_features]: each feature uniform in [0, 1] with probability `density` (per instance), else 0."""
    values = torch.rand(batch, n_instances, n_features, generator=generator)
    on = torch.rand(batch, n_instances, n_features, generator=generator) < density.reshape(1, -1, 1)
    return values * on


class ToyModel(nn.Module):
    """n_instances independent toy models, h = W x and x' = ReLU(W^T h + b), trained together."""

    def __init__(self, n_instances: int, n_features: int, n_hidden: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n_instances, n_hidden, n_features, generator=g) * (2 / (n_hidden + n_features)) ** 0.5)
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:             # x: [batch, instances, features]
        h = torch.einsum("imn,bin->bim", self.W, x)
        return torch.relu(torch.einsum("imn,bim->bin", self.W, h) + self.b)


@dataclass
class ToyResult:
    model: ToyModel
    density: torch.Tensor         # [instances]
    importance: torch.Tensor      # [instances, features]
    loss: list[float]


@torch.enable_grad()             # a notebook may have turned gradients off globally; training needs them
def train_toy(n_features: int, n_hidden: int, density, importance, *, steps: int = 3000, batch: int = 1024,
              lr: float = 1e-2, seed: int = 0) -> ToyResult:
    """Train one toy model per (density, importance) row, all at once.

    density: [instances] (a float broadcasts to one instance); importance: [instances, n_features] or [n_features].
    """
    density = torch.as_tensor(density, dtype=torch.float32).reshape(-1)
    importance = torch.as_tensor(importance, dtype=torch.float32)
    if importance.ndim == 1:
        importance = importance.expand(len(density), -1)
    if importance.shape != (len(density), n_features):
        raise ValueError(f"importance must be [instances, n_features] = [{len(density)}, {n_features}] or "
                         f"[n_features], got {list(importance.shape)}")
    if not ((density > 0) & (density <= 1)).all():
        raise ValueError("every density must be in (0, 1]: the probability that a feature is on")
    model = ToyModel(len(density), n_features, n_hidden, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for step in range(steps):
        x = sample_features(len(density), batch, n_features, density, g)
        loss = (importance * (x - model(x)).pow(2)).mean(0).sum()   # summed over instances: each trains alone
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(loss.item())
    return ToyResult(model.eval(), density, importance, losses)


@torch.no_grad()
def feature_norms(model: ToyModel) -> torch.Tensor:
    """[instances, features]: ||W_i||, about 1 for a feature the model stores and about 0 for one it drops."""
    return model.W.norm(dim=1)


@torch.no_grad()
def interference(model: ToyModel) -> torch.Tensor:
    """[instances, features]: sum over j != i of (W_i_hat . W_j)^2, how much other features project onto feature i's
    direction (Elhage et al.'s superposition measure): 0 when feature i has a direction of its own."""
    W = model.W                                                          # [i, m, n]
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    dots = torch.einsum("imn,imk->ink", unit, W).pow(2)                  # [i, n, n]
    return dots.sum(-1) - torch.diagonal(dots, dim1=-2, dim2=-1)


NOT_STORED, SUPERPOSITION, DEDICATED = 0, 1, 2


@torch.no_grad()
def classify_two_in_one(model: ToyModel, stored: float = 0.5) -> torch.Tensor:
    """For 2 features in 1 dimension: per instance, what happened to feature 2.

    NOT_STORED: ||W_2|| < stored. DEDICATED: feature 2 has the dimension and feature 1 does not.
    SUPERPOSITION: both are stored (necessarily sharing the one dimension, with opposite signs).
    """
    norms = feature_norms(model)
    if norms.shape[1] != 2 or model.W.shape[1] != 1:
        raise ValueError("classify_two_in_one is for toy models of 2 features in 1 hidden dimension")
    f1, f2 = norms[:, 0] >= stored, norms[:, 1] >= stored
    out = torch.full((len(norms),), NOT_STORED)
    out[f2 & ~f1] = DEDICATED
    out[f2 & f1] = SUPERPOSITION
    return out


def phase_diagram(densities, relative_importances, *, steps: int = 2000, seed: int = 0) -> torch.Tensor:
    """[len(relative_importances), len(densities)]: classify_two_in_one over a grid (feature 1's importance is 1)."""
    densities = torch.as_tensor(densities, dtype=torch.float32)
    rel = torch.as_tensor(relative_importances, dtype=torch.float32)
    grid_d, grid_r = torch.meshgrid(densities, rel, indexing="xy")        # [len(rel), len(densities)]
    importance = torch.stack([torch.ones(grid_r.numel()), grid_r.flatten()], dim=1)
    result = train_toy(2, 1, grid_d.flatten(), importance, steps=steps, seed=seed)
    return classify_two_in_one(result.model).reshape(len(rel), len(densities))
