"""Training-batch augmentations a dataset descriptor may name (torch only when applied)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlipAndCrop:
    """Random horizontal flip, then a random crop of the original size from the image padded by `padding`.

    Works on a whole (N, C, H, W) batch on its own device, drawing from the given generator
    (which must live on that device). `fill` is the per-channel pad value: the normalised
    value of a black pixel, so padding matches zero padding before normalisation (OpenLTH).
    """
    padding: int
    fill: tuple[float, ...]

    def __call__(self, x, generator):
        import torch

        n, c, h, w = x.shape
        p = self.padding
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        padded = torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1).repeat(n, 1, h + 2 * p,
                                                                                                   w + 2 * p)
        padded[:, :, p:p + h, p:p + w] = x
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * p)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
        # Two gathers: the h rows of each image's window, then the w columns of each row.
        return padded.gather(2, rows).gather(3, cols)

