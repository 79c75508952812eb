"""Encoders, fusion modules, heads and the multi-modal classifier."""

from gblend_jax.models.builder import FUSIONS
from gblend_jax.models.builder import MID_FUSIONS
from gblend_jax.models.builder import build_model
from gblend_jax.models.builder import default_model_config
from gblend_jax.models.builder import has_unimodal_shares
from gblend_jax.models.encoders import ENCODERS
from gblend_jax.models.encoders import MLPEncoder
from gblend_jax.models.encoders import build_encoder
from gblend_jax.models.fusion import ConcatFusion
from gblend_jax.models.fusion import FiLMFusion
from gblend_jax.models.fusion import GatedFusion
from gblend_jax.models.fusion import SumFusion
from gblend_jax.models.heads import ClassifierHead
from gblend_jax.models.mid_fusion import MidConcatFusion
from gblend_jax.models.mid_fusion import MidFusion
from gblend_jax.models.mid_fusion import NLGateFusion
from gblend_jax.models.mid_fusion import SEGateFusion
from gblend_jax.models.multimodal import MultiModalClassifier
from gblend_jax.models.resnet import BasicBlock
from gblend_jax.models.resnet import BottleneckBlock
from gblend_jax.models.resnet import CifarResNet
from gblend_jax.models.resnet import FrameResNet18
from gblend_jax.models.resnet import ResNet
from gblend_jax.models.resnet import ResNet10
from gblend_jax.models.resnet import ResNet18
from gblend_jax.models.resnet import ResNet50

__all__ = [
    'BasicBlock',
    'BottleneckBlock',
    'CifarResNet',
    'ClassifierHead',
    'ConcatFusion',
    'ENCODERS',
    'FUSIONS',
    'MID_FUSIONS',
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
    'has_unimodal_shares',
]
