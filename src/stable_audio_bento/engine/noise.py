"""Per-request randomness: every draw of a request comes from its own seed.

The initial noise is drawn on the CPU from the seed, so a seed starts from the same noise on
every device; the step noise (SDE / ping-pong re-noise) comes from a per-request generator on
the engine's device, so the sampling loop never waits on the host. A request then gets the same
audio alone or in any batch, whatever else runs in the process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...], device: str, dtype: Any) -> Any:
    """One standard normal tensor of ``shape`` per seed, stacked, on ``device`` in ``dtype``."""
    import torch

    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    return noise.to(device, dtype)


class ItemNoise:
    """Per-request random streams for the sampling steps, one generator per batch item.

    Each call draws one standard normal tensor per item from that item's own generator, so an
    item's noise does not depend on what else is in the batch.
    """

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...], device: str) -> None:
        import torch

        # On the CPU the initial noise already consumed the start of each seed's stream: the
        # step noise continues it, as one generator per request did before the split.
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        if device == "cpu":
            for generator in self.generators:
                torch.randn(shape, generator=generator)
        self.shape = shape
        self.device = device

    def like(self, x: Any) -> Callable[..., Any]:
        """A k-diffusion noise sampler ``(sigma, sigma_next) -> noise`` shaped and typed as x."""
        import torch

        buffer = torch.empty((len(self.generators), *self.shape), device=self.device)

        def draw(*_sigmas: Any) -> Any:
            for row, generator in zip(buffer, self.generators, strict=True):
                torch.randn(self.shape, generator=generator, out=row)
            return buffer.to(x.dtype)

        return draw

    def brownian(self, x: Any, sigma_min: float, sigma_max: float) -> Callable[..., Any]:
        """The reference's SDE noise: a Brownian tree per item (k-diffusion's
        ``BrownianTreeNoiseSampler``), seeded as stable-audio-tools seeds it when it builds the
        tree, with the next ``randint(0, 2**63 - 1)`` of the item's stream. On the CPU a single
        request then gets the reference's step noise for its seed."""
        import k_diffusion as K
        import torch

        seeds = [
            int(torch.randint(0, 2**63 - 1, [], generator=g, device=g.device).item())
            for g in self.generators
        ]
        sampler: Callable[..., Any] = K.sampling.BrownianTreeNoiseSampler(
            x, sigma_min, sigma_max, seed=seeds
        )
        return sampler
