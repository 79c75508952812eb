"""Long-tailed recognition: the tricks of Zhang et al. (AAAI 2021).

Submodules:

  profiles      long-tailed class counts (exponential, step) and subsets
  losses        CS-CE, focal, class-balanced, LDAM, balanced softmax,
                logit adjustment (loss and post-hoc)
  sampling      class-aware / progressive sampling, over-/under-sampling,
                a seeded resumable epoch sampler for grain
  mixup         input and manifold mixup, Remix, the mixed loss
  cam           class activation maps and CAM-based sampling images
  shot_metrics  many-/medium-/few-shot accuracy, top-1 error
  decoupling    decoupled classifier learning (Kang et al., ICLR 2020):
                τ-normalisation, cRT's and LWS's classifier stage
"""

from gblend_jax.longtail import cam
from gblend_jax.longtail import decoupling
from gblend_jax.longtail import losses
from gblend_jax.longtail import mixup
from gblend_jax.longtail import profiles
from gblend_jax.longtail import sampling
from gblend_jax.longtail import shot_metrics
from gblend_jax.longtail.decoupling import crt_classifier
from gblend_jax.longtail.decoupling import decoupled_stages
from gblend_jax.longtail.decoupling import lws_classifier
from gblend_jax.longtail.decoupling import start_classifier_stage
from gblend_jax.longtail.decoupling import tau_normalize
from gblend_jax.longtail.losses import logit_adjusted_loss
from gblend_jax.longtail.losses import posthoc_adjusted_logits

__all__ = (
    'cam',
    'crt_classifier',
    'decoupled_stages',
    'decoupling',
    'logit_adjusted_loss',
    'losses',
    'lws_classifier',
    'mixup',
    'posthoc_adjusted_logits',
    'profiles',
    'sampling',
    'shot_metrics',
    'start_classifier_stage',
    'tau_normalize',
)
