"""Encoders, fusion modules, heads and the multi-modal classifier."""

from gblend_jax.models.builder import FUSIONS, build_model, default_model_config
from gblend_jax.models.encoders import ENCODERS, MLPEncoder, build_encoder
from gblend_jax.models.fusion import (
    ConcatFusion,
    FiLMFusion,
    GatedFusion,
    SumFusion,
)
from gblend_jax.models.heads import ClassifierHead
from gblend_jax.models.mid_fusion import (
    MidConcatFusion,
    MidFusion,
    NLGateFusion,
    SEGateFusion,
)
from gblend_jax.models.multimodal import MultiModalClassifier
from gblend_jax.models.resnet import (
    BasicBlock,
    BottleneckBlock,
    CifarResNet,
    FrameResNet18,
    ResNet,
    ResNet10,
    ResNet18,
    ResNet50,
)

__all__ = [
    'BasicBlock',
    'BottleneckBlock',
    'CifarResNet',
    'ClassifierHead',
    'ConcatFusion',
    'ENCODERS',
    'FUSIONS',
    'FiLMFusion',
    'FrameResNet18',
    'GatedFusion',
    'MLPEncoder',
    'MidConcatFusion',
    'MidFusion',
    'MultiModalClassifier',
    'NLGateFusion',
    'ResNet',
    'ResNet10',
    'ResNet18',
    'ResNet50',
    'SEGateFusion',
    'SumFusion',
    'build_encoder',
    'build_model',
    'default_model_config',
]
