"""A re-implementation of CM-NAS's released evaluation models (JDAI-CV/CM-NAS,
`models/model_eval_op.py` and `models/model_base.py`), written from their module names and
forward passes so that tests can write checkpoints exactly as CM-NAS's training script saves
them and compute the features CM-NAS's own eval forward gives. Not reidc code; CM-NAS's code is
not vendored. What matters and is kept:

- `SwitchBatchNorm2d(num_features, switch, with_relu)`: `thermal_bn`, `visible_bn`,
  `sharable_bn` (in that registration order) and an optional ReLU inside; switch 0 = split,
  1 = shared; forward(x, mode): mode 0 splits the batch in halves (first visible, second
  thermal), 1 visible, 2 thermal.
- Blocks take one config entry per BN in construction order (bn1, bn2[, bn3]) after the
  downsample's; the stem BN (with ReLU) takes the first entry; `DownsampleSwitchBN` = `.conv`
  + `.bn` (no ReLU); layers are ModuleLists; the last stride is 1.
- `TwoStreamSwitchBNOp`: `backbone` + `avgpool` + `bnneck` (BatchNorm1d) + `classifier`;
  forward(x_v, x_t, mode) concatenates for mode 0; eval returns (global_feat, feat).
- `Baseline`: a torchvision-style ResNet-50 (`bn1`, `relu`, `downsample.0/.1`) + the same head.
"""
import torch
from torch import nn


class SwitchBatchNorm2d(nn.Module):
    def __init__(self, num_features, switch, with_relu=True):
        super().__init__()
        self.thermal_bn = nn.BatchNorm2d(num_features)
        self.visible_bn = nn.BatchNorm2d(num_features)
        self.sharable_bn = nn.BatchNorm2d(num_features)
        self.relu = nn.ReLU(inplace=True) if with_relu else None
        self.switch = switch

    def forward(self, x, mode=0):
        if self.switch == 1:
            y = self.sharable_bn(x)
        elif mode == 0:
            xv, xt = torch.split(x, x.size(0) // 2, dim=0)
            y = torch.cat((self.visible_bn(xv), self.thermal_bn(xt)), 0)
        else:
            y = self.visible_bn(x) if mode == 1 else self.thermal_bn(x)
        return self.relu(y) if self.relu is not None else y


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlockSwitchBN(nn.Module):
    expansion = 1

    def __init__(self, config, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = SwitchBatchNorm2d(planes, config.pop(0), with_relu=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = SwitchBatchNorm2d(planes, config.pop(0), with_relu=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x, mode=0):
        out = self.bn2(self.conv2(self.bn1(self.conv1(x), mode)), mode)
        res = self.downsample(x, mode) if self.downsample is not None else x
        return self.relu(out + res)


class BottleneckSwitchBN(nn.Module):
    expansion = 4

    def __init__(self, config, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = SwitchBatchNorm2d(planes, config.pop(0), with_relu=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = SwitchBatchNorm2d(planes, config.pop(0), with_relu=True)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = SwitchBatchNorm2d(planes * 4, config.pop(0), with_relu=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x, mode=0):
        out = self.bn1(self.conv1(x), mode)
        out = self.bn2(self.conv2(out), mode)
        out = self.bn3(self.conv3(out), mode)
        res = self.downsample(x, mode) if self.downsample is not None else x
        return self.relu(out + res)


class DownsampleSwitchBN(nn.Module):
    def __init__(self, config, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = SwitchBatchNorm2d(cout, config.pop(0), with_relu=False)

    def forward(self, x, mode=0):
        return self.bn(self.conv(x), mode)


class ResNetUnfoldSwitchBN(nn.Module):
    def __init__(self, block, layers, config, last_stride=1):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = SwitchBatchNorm2d(64, config.pop(0), with_relu=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(config, block, 64, layers[0])
        self.layer2 = self._make_layer(config, block, 128, layers[1], 2)
        self.layer3 = self._make_layer(config, block, 256, layers[2], 2)
        self.layer4 = self._make_layer(config, block, 512, layers[3], last_stride)

    def _make_layer(self, config, block, planes, blocks, stride=1):
        ds = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            ds = DownsampleSwitchBN(config, self.inplanes, planes * block.expansion, stride)
        layers = nn.ModuleList([block(config, self.inplanes, planes, stride, ds)])
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(config, self.inplanes, planes))
        return layers

    def forward(self, x, mode=0):
        x = self.maxpool(self.bn1(self.conv1(x), mode))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for layer in stage:
                x = layer(x, mode)
        return x


class _Head(nn.Module):
    feat_dim = 2048

    def _head(self, x):
        global_feat = self.avgpool(x).flatten(1)
        feat = self.bnneck(global_feat)
        if self.training:
            return global_feat, feat, self.classifier(feat)
        return global_feat, feat

    def _add_head(self, num_classes, feat_dim):
        self.feat_dim = feat_dim
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.bnneck = nn.BatchNorm1d(feat_dim)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False)


class TwoStreamSwitchBNOp(_Head):
    """`depth` 50 is CM-NAS's (its class builds ResNet-50); 18/34 use its resnet18/34 factories."""

    def __init__(self, num_classes, config, depth=50):
        super().__init__()
        block, layers = {18: (BasicBlockSwitchBN, [2, 2, 2, 2]), 34: (BasicBlockSwitchBN, [3, 4, 6, 3]),
                         50: (BottleneckSwitchBN, [3, 4, 6, 3])}[depth]
        self.backbone = ResNetUnfoldSwitchBN(block, layers, list(config))
        self._add_head(num_classes, 512 * block.expansion)

    def forward(self, x_v, x_t, mode=0):
        x = torch.cat((x_v, x_t), 0) if mode == 0 else (x_v if mode == 1 else x_t)
        return self._head(self.backbone(x, mode))


class _Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class _ResNet50(nn.Module):
    def __init__(self, last_stride=1):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, 2)
        self.layer3 = self._make_layer(256, 6, 2)
        self.layer4 = self._make_layer(512, 3, last_stride)

    def _make_layer(self, planes, blocks, stride=1):
        ds = None
        if stride != 1 or self.inplanes != planes * 4:
            ds = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [_Bottleneck(self.inplanes, planes, stride, ds)]
        self.inplanes = planes * 4
        layers += [_Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Baseline(_Head):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = _ResNet50()
        self._add_head(num_classes, 2048)

    def forward(self, x, x_tmp=None, mode=None):
        return self._head(self.backbone(x))


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BN statistics (a freshly built model's BNs are identities);
    scaled so activations stay O(1) through the ResNet."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                n = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(100)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=g))
    return model.eval()
