"""The bias card: every probe of this package run on one model, and one page that shows it.

``report(model)`` runs the log-probability probes (pronouns and names, with
the correlation against the BLS shares), the linear probes with their control
task, the head mediation, and steering along the best layer's direction.
``card(report)`` draws it: effect sizes with their confidence intervals, the
probe curves, the top mediating heads and the steering curve. The same calls
work for phi4-tiny on a laptop and for microsoft/phi-4 on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from phi4lab.analysis.stats import bootstrap
from phi4lab.bias import causal, data, preference, probes


@dataclass
class BiasReport:
    model: str
    occupations: list[str]
    pronouns: torch.Tensor                  # [occupations, pronoun frames]
    names: torch.Tensor                     # [occupations, name frames]
    pronoun_corr: dict
    name_corr: dict
    mean_pronoun: tuple                     # (estimate, low, high) of the mean preference
    probe: dict
    mediators: list[dict]
    mediation_te: tuple                     # (estimate, low, high) of the mean total effect
    steer_layer: int
    alphas: list[float]
    steering: torch.Tensor                  # [alphas, prompts]
    notes: list[str] = field(default_factory=list)


def report(model, name: str | None = None, occupations: list[str] | None = None, alphas=(-2, -1, 0, 1, 2),
           seed: int = 0, progress: bool = True) -> BiasReport:
    occupations = occupations or data.occupations()
    steps = tqdm(total=5, desc="bias probes", disable=not progress)
    pron = preference.pronoun_preference(model, occupations)
    names = preference.name_preference(model, occupations)
    steps.update()
    pron_corr = preference.correlation_with_bls(pron, occupations, seed=seed)
    name_corr = preference.correlation_with_bls(names, occupations, seed=seed)
    mean_pron = tuple(x.item() for x in bootstrap(pron, lambda v: v.mean(), seed=seed))
    probe = probes.probe_layers(model, seed=seed)
    steps.update()
    male, female = causal.gender_pairs()
    mediation = causal.head_mediation(model, male, female)
    steps.update()
    mediators = causal.top_mediators(mediation, seed=seed)
    te = tuple(x.item() for x in bootstrap(mediation["te"], lambda v: v.mean(), seed=seed))
    # steer along the direction that is most selective (real minus control accuracy), after the embedding
    rows = probe["layers"][1:]
    layer = max(rows, key=lambda r: (round(r["selectivity_mean_diff"], 6), -r["layer"]))["layer"]
    frames = data.templates()["pronoun_frames"][:4]
    prompts = [data.fill(f, o) for o in occupations for f in frames]
    steering = causal.steer(model, prompts, probe["direction"][layer], layer, list(alphas))
    steps.update()
    steps.close()
    return BiasReport(model=name or getattr(model.cfg, "model_name", "model"), occupations=occupations,
                      pronouns=pron, names=names, pronoun_corr=pron_corr, name_corr=name_corr,
                      mean_pronoun=mean_pron, probe=probe, mediators=mediators, mediation_te=te,
                      steer_layer=layer, alphas=list(alphas), steering=steering)


# A share NIE / TE means something only when TE is clearly away from zero: a ratio over a denominator
# near 0 can come out at any size and either sign. 0.1 nats moves the odds of "she" against "he" by
# about 10% (exp(0.1) = 1.105); an effect whose whole interval lies closer to zero is not drawn.
MIN_EFFECT = 0.1
NO_EFFECT = ("total effect man -> woman {:.2f} nats, 95% CI [{:.2f}, {:.2f}]:\nthe interval does not lie "
             "at least {:.1f} nats from 0,\nso there is too little effect to share out.\n"
             "Shares of it (NIE / TE) would divide by nearly nothing.")


def has_total_effect(r: BiasReport, min_effect: float = MIN_EFFECT) -> bool:
    """Whether the total effect's whole 95% interval lies at least `min_effect` nats from zero.

    Only then does the card draw mediation shares: NIE / TE over an effect near zero is noise.
    """
    _, low, high = r.mediation_te
    return low >= min_effect or high <= -min_effect


def card(r: BiasReport):
    """A 2 x 2 matplotlib figure summarising a BiasReport."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8.2))
    # (a) preference against the BLS share, one point per occupation, CI over frames
    shares = [data.occupation(o).pct_female for o in r.occupations]
    means = r.pronouns.mean(-1)
    lows, highs = [], []
    for k in range(len(r.occupations)):
        _, lo, hi = bootstrap(r.pronouns[k], lambda v: v.mean(), n=400, seed=k)
        lows.append(means[k].item() - lo.item())
        highs.append(hi.item() - means[k].item())
    ax[0, 0].errorbar(shares, means, yerr=[lows, highs], fmt="o", ms=3, alpha=0.7, elinewidth=0.8)
    c = r.pronoun_corr
    ax[0, 0].set(xlabel="women among employed, % (BLS CPS Table 11, 2015/16)",
                 ylabel="log p(she) - log p(he)",
                 title=f"pronoun preference: r = {c['r']:.2f} [{c['low']:.2f}, {c['high']:.2f}]")
    # (b) linear probes by layer, real task and control task
    layers = [row["layer"] for row in r.probe["layers"]]
    for key, style, label in (("mean_diff", "-o", "difference of means"), ("logistic", "-s", "logistic regression"),
                              ("mean_diff_control", ":o", "difference of means, control"),
                              ("logistic_control", ":s", "logistic regression, control")):
        ax[0, 1].plot(layers, [row[key] for row in r.probe["layers"]], style, label=label, ms=4)
    ax[0, 1].axhline(0.5, color="grey", lw=0.5)
    ax[0, 1].set_xticks(layers)
    ax[0, 1].set(xlabel="layer (0 = embedding)", ylabel="held-out accuracy", ylim=(0, 1.05),
                 title="is the subject's gender linearly readable?")
    ax[0, 1].legend(fontsize=7)
    # (c) top mediating heads, only where there is an effect to share out
    te = r.mediation_te
    if has_total_effect(r):
        heads = r.mediators
        y = range(len(heads))
        ax[1, 0].barh(list(y), [h["share"] for h in heads],
                      xerr=[[h["share"] - h["low"] for h in heads], [h["high"] - h["share"] for h in heads]])
        ax[1, 0].set_yticks(list(y), [h["head"] for h in heads])
        ax[1, 0].invert_yaxis()
        ax[1, 0].set(xlabel="share of the man -> woman effect mediated (NIE / TE)",
                     title=f"top heads; TE = {te[0]:.2f} [{te[1]:.2f}, {te[2]:.2f}] nats")
    else:
        ax[1, 0].set_axis_off()
        ax[1, 0].text(0.5, 0.5, NO_EFFECT.format(*te, MIN_EFFECT), ha="center", va="center", wrap=True, fontsize=9,
                      transform=ax[1, 0].transAxes)
        ax[1, 0].set_title("top heads: not shown")
    # (d) steering
    mean = r.steering.mean(-1)
    ax[1, 1].plot(r.alphas, mean, "-o")
    ax[1, 1].fill_between(r.alphas, r.steering.quantile(0.1, -1), r.steering.quantile(0.9, -1), alpha=0.2,
                          label="10-90% of prompts")
    ax[1, 1].set(xlabel=f"alpha (multiples of the class-mean difference, after layer {r.steer_layer})",
                 ylabel="log p(she) - log p(he)", title="steering along the probe direction")
    ax[1, 1].legend(fontsize=7)
    m = r.mean_pronoun
    fig.suptitle(f"bias card: {r.model}. Mean pronoun preference {m[0]:.2f} [{m[1]:.2f}, {m[2]:.2f}] nats; "
                 f"names r = {r.name_corr['r']:.2f} [{r.name_corr['low']:.2f}, {r.name_corr['high']:.2f}]",
                 fontsize=10)
    fig.tight_layout()
    return fig
