"""A small U-Net for binary segmentation (configurable depth and width, BatchNorm)."""

from __future__ import annotations

import torch
from torch import nn


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder of ``depth`` levels (width, 2·width, …), bottleneck, mirrored decoder with skip
    connections and transposed-convolution upsampling; one logit per pixel."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, width: int = 16, depth: int = 3):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = in_channels
        for ch in chans[:-1]:
            self.down.append(_double_conv(c, ch))
            c = ch
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(chans[-2], chans[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for ch_hi, ch in zip(chans[:0:-1], chans[-2::-1], strict=True):
            self.up.append(nn.ConvTranspose2d(ch_hi, ch, 2, stride=2))
            self.dec.append(_double_conv(2 * ch, ch))
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)
