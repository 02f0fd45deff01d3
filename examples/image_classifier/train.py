"""Make the image-classifier example: a small ResNet-style CNN (random weights: this example is about the
request pipeline, not accuracy), saved as TorchScript, ten class names, and real test images.

torchvision is not needed: the network is plain torch, and bento-compile checks its image preprocessing
against torchvision's definitions (torchvision itself when installed). The images are the ones
scikit-image ships (photographs: a cat, an astronaut, coffee, a rocket), copied, never downloaded.

    python examples/image_classifier/train.py          # writes model.pt, labels.txt, images/ beside itself
    bento-compile build -f examples/image_classifier/bento.yaml
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

LABELS = ["tabby cat", "astronaut", "coffee cup", "rocket", "retina", "galaxy", "horse", "coins", "camera",
          "chessboard"]
IMAGES = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "retina.jpg", "hubble_deep_field.jpg"]


def network():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))

    class SmallResNet(nn.Module):
        def __init__(self, classes: int):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.blocks = nn.Sequential(Block(16, 32, 2), Block(32, 64, 2), Block(64, 96, 2))
            self.head = nn.Linear(96, classes)

        def forward(self, image):
            features = self.blocks(self.stem(image)).mean(dim=(2, 3))
            return self.head(features)

    torch.manual_seed(0)
    return SmallResNet(len(LABELS)).eval()


def main(out: Path) -> None:
    import skimage.data
    import torch

    out.mkdir(parents=True, exist_ok=True)
    module = network()
    example = torch.zeros(1, 3, 224, 224)
    torch.jit.save(torch.jit.trace(module, example), str(out / "model.pt"))
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    source = Path(skimage.data.__file__).parent
    (out / "images").mkdir(exist_ok=True)
    for name in IMAGES:
        shutil.copyfile(source / name, out / "images" / name)
    print(f"wrote {out / 'model.pt'}, labels.txt and {len(IMAGES)} images")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
