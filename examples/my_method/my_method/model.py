"""A small CNN for 8×8 single-channel images: two 3×3 convolutions and a linear classifier."""
from pydantic import BaseModel, Field
from torch import nn

from workers.plugins import register_model


class SmallCNNOptions(BaseModel):
    channels: int = Field(default=8, ge=1, le=256, description="channels of the first convolution (the second has twice)")


class SmallCNN(nn.Module):
    output_layer = "fc"  # not pruned unless the spec says prune_output: true

    def __init__(self, input_shape, num_classes, channels):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.fc = nn.Linear(2 * channels * (h // 2) * (w // 2), num_classes)

    def forward(self, x):
        x = nn.functional.relu(self.conv1(x))
        x = nn.functional.max_pool2d(nn.functional.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def build(input_shape, num_classes, channels):
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn takes images (channels, height, width), got input shape {input_shape}")
    return SmallCNN(input_shape, num_classes, channels)


register_model("small_cnn", build, options=SmallCNNOptions)
