"""Reference training loop in PyTorch, the yardstick for crossfold's trainer.

Same work per step as crossfold's training loop with augmentation off:
gather a batch of uint8 images from one tensor on the device, scale to [0, 1],
normalise, ResNet (one-channel stem, 2 classes) forward, class-weighted
cross-entropy, backward, AdamW step. Prints one JSON line with images/s.

Usage: python3 bench/reference.py --arch resnet34 --size 64 --batch 32 \
           --steps 20 --warmup 3 --threads 2 --device cpu [--precision fp32|bf16|fp16] [--channels-last] [--fused] [--cudnn-benchmark on|off]
"""
import argparse
import json
import time

import torch
import torch.nn as nn


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, w, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != w:
            self.down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, w, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, w, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = nn.Conv2d(w, 4 * w, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * w)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != 4 * w:
            self.down = nn.Sequential(nn.Conv2d(cin, 4 * w, 1, stride, bias=False), nn.BatchNorm2d(4 * w))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


def resnet(arch, classes=2):
    """torchvision's ResNet with a one-channel stem (same shapes as crossfold's)."""
    block, stages = {
        "resnet18": (Basic, [2, 2, 2, 2]),
        "resnet34": (Basic, [3, 4, 6, 3]),
        "resnet50": (Bottleneck, [3, 4, 6, 3]),
    }[arch]
    layers = [nn.Conv2d(1, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (n, w) in enumerate(zip(stages, [64, 128, 256, 512])):
        for b in range(n):
            layers.append(block(cin, w, 2 if (b == 0 and i > 0) else 1))
            cin = w * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet34", choices=["resnet18", "resnet34", "resnet50"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--fused", action="store_true",
                    help="torch.optim.AdamW(fused=True): one multi-tensor kernel per step, as crossfold's default")
    ap.add_argument("--cudnn-benchmark", default="on", choices=["on", "off"],
                    help="cuDNN autotuning on CUDA (on by default, as most PyTorch training scripts set it)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = a.cudnn_benchmark == "on"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = resnet(a.arch).to(dev)
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=1e-4, fused=True if a.fused else None)
    images = torch.randint(0, 256, (a.images, 1, a.size, a.size), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, 2, (a.images,), device=dev)
    weight = torch.tensor([1.0, 1.0], device=dev)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    scaler = torch.amp.GradScaler(enabled=(amp == torch.float16))
    net.train()

    def step():
        idx = torch.randint(0, a.images, (a.batch,), device=dev)
        x = images.index_select(0, idx).float().div_(255.0)
        x = (x - 0.5) / 0.25
        if a.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels.index_select(0, idx)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    loss.item()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch", "arch": a.arch, "size": a.size, "batch": a.batch, "device": a.device,
        "precision": a.precision, "channels_last": a.channels_last, "threads": a.threads,
        "cudnn_benchmark": dev.type == "cuda" and a.cudnn_benchmark == "on", "fused_optimizer": a.fused,
        "torch": torch.__version__, "images_per_second": a.steps * a.batch / dt,
    }))


if __name__ == "__main__":
    main()
