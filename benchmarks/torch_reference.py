"""The PyTorch twin of `models.network` for the benchmark's networks (benchmark-only code).

It mirrors the Flax builder layer for layer (same stem, downsampling, cells, attention, head,
same parameter count) for the cells the benchmark uses, so that step times compare the same
arithmetic. Channels-last layout, as PyTorch recommends for CPU convolutions.
"""
from __future__ import annotations

import torch
from torch import nn

from models.genotype import Genotype

_ACTIVATIONS = {'relu': nn.ReLU, 'swish': nn.SiLU, 'gelu': nn.GELU}


def _cna(cin: int, cout: int, k: int, act: str | None, stride: int = 1, dilation: int = 1,
         groups: int = 1, padding=None) -> nn.Sequential:
  if padding is None:
    padding = dilation * (k // 2)
  layers = [nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)]
  if act:
    layers.append(_ACTIVATIONS[act]())
  return nn.Sequential(*layers)


class _Shortcut(nn.Module):
  def __init__(self, cin: int, cout: int):
    super().__init__()
    self.project = _cna(cin, cout, 1, None) if cin != cout else nn.Identity()

  def forward(self, x):
    return self.project(x)


class _Conv(nn.Module):
  def __init__(self, cin, cout, k, dilation, act):
    super().__init__()
    self.body = _cna(cin, cout, k, act, dilation=dilation)

  def forward(self, x):
    return self.body(x)


class _Sep(nn.Module):
  def __init__(self, cin, cout, k, dilation, act):
    super().__init__()
    self.body = nn.Sequential(_cna(cin, cin, k, act, dilation=dilation, groups=cin),
                              _cna(cin, cout, 1, act))

  def forward(self, x):
    return self.body(x)


class _MBConv(nn.Module):
  def __init__(self, cin, cout, k, dilation, act, expansion=4):
    super().__init__()
    hidden = cin * expansion
    self.body = nn.Sequential(_cna(cin, hidden, 1, act),
                              _cna(hidden, hidden, k, act, dilation=dilation, groups=hidden),
                              _cna(hidden, cout, 1, None))
    self.residual = cin == cout

  def forward(self, x):
    y = self.body(x)
    return x + y if self.residual else y


class _Residual(nn.Module):
  def __init__(self, cin, cout, k, dilation, act):
    super().__init__()
    self.body = nn.Sequential(_cna(cin, cout, k, act, dilation=dilation),
                              _cna(cout, cout, k, None, dilation=dilation))
    self.shortcut = _Shortcut(cin, cout)
    self.act = _ACTIVATIONS[act]()

  def forward(self, x):
    return self.act(self.body(x) + self.shortcut(x))


class _Shrinkage(_Residual):
  def __init__(self, cin, cout, k, dilation, act):
    super().__init__(cin, cout, k, dilation, act)
    self.fc1 = _cna(cout, cout, 1, act)
    self.fc2 = nn.Conv2d(cout, cout, 1)

  def forward(self, x):
    y = self.body(x)
    magnitude = y.abs().mean(dim=(2, 3), keepdim=True)
    tau = torch.sigmoid(self.fc2(self.fc1(magnitude))) * magnitude
    y = torch.sign(y) * torch.clamp(y.abs() - tau, min=0)
    return self.act(y + self.shortcut(x))


class _SqueezeExcite(nn.Module):
  def __init__(self, channels, reduction=4, min_hidden=4):
    super().__init__()
    hidden = max(min_hidden, channels // reduction)
    self.fc1 = nn.Conv2d(channels, hidden, 1)
    self.fc2 = nn.Conv2d(hidden, channels, 1)

  def forward(self, x):
    s = x.mean(dim=(2, 3), keepdim=True)
    return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


_CELLS = {'conv': _Conv, 'sep': _Sep, 'mbconv': _MBConv, 'residual': _Residual,
          'shrinkage': _Shrinkage}
_ATTENTION = {'none': lambda channels: nn.Identity(), 'se': _SqueezeExcite}


class Network(nn.Module):
  """stem - stages - global average pool - dropout - dense, as models.network.Network."""

  def __init__(self, genotype: Genotype, num_classes: int, channels: int):
    super().__init__()
    g = genotype.canonical()
    act = g.activation
    layers = [_cna(channels, g.stem_width, 3, act, stride=g.stem_stride)]
    width = g.stem_width
    for stage in g.stages:
      if stage.downsample == 'max':
        layers.append(nn.MaxPool2d(2))
      elif stage.downsample == 'avg':
        layers.append(nn.AvgPool2d(2))
      elif stage.downsample == 'conv':  # padding bottom/right only, as the Flax builder
        layers += [nn.ZeroPad2d((0, 1, 0, 1)),
                   _cna(width, stage.width, 3, act, stride=2, padding=0)]
        width = stage.width
      if not stage.num_cells and width != stage.width:
        layers.append(_cna(width, stage.width, 1, act))
        width = stage.width
      for _ in range(stage.num_cells):
        if stage.cell not in _CELLS:
          raise ValueError(f'the PyTorch twin has no {stage.cell!r} cell')
        layers.append(_CELLS[stage.cell](width, stage.width, stage.kernel, stage.dilation, act))
        width = stage.width
      if stage.num_cells:
        layers.append(_ATTENTION[stage.attention](width))
    self.features = nn.Sequential(*layers)
    self.dropout = nn.Dropout(g.dropout)
    self.head = nn.Linear(width, num_classes)

  def forward(self, x):
    x = self.features(x).mean(dim=(2, 3))
    return self.head(self.dropout(x))
