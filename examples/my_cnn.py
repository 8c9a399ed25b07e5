"""Your own model, one more row of the course's CIFAR-10 table: a small CNN with batch normalisation.

Registered with sweeplab's own decorator, imported from `sweeplab.api` (the only sweeplab module a plugin
needs). Train it alone, or as a row of an experiment file that names this file under `plugins:`:

    sweeplab run image --plugin examples/my_cnn.py data=cifar10 model=my_cnn data.train_limit=2000 train.epochs=1
    sweeplab sweep examples/cifar10_my_cnn.yaml
"""
from pydantic import Field
from torch import nn

from sweeplab.api import ImageSpec, ModelConfig, register_model


class MyCNNConfig(ModelConfig):
    width: int = Field(32, ge=1, le=1024, description="channels of the first block (doubled in the second)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")


@register_model("my_cnn", task="image", config=MyCNNConfig)
def my_cnn(spec: ImageSpec, cfg: MyCNNConfig) -> nn.Module:
    """Two conv-BN-ReLU-pool blocks, global average pooling and a linear classifier."""
    w = cfg.width

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]

    return nn.Sequential(*block(spec.channels, w), *block(w, 2 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(cfg.dropout), nn.Linear(2 * w, spec.num_classes))
