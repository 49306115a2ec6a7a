"""Classifiers with normalisation inside: the zoo, model specs (torchvision, timm, your own
factory), the Normalize wrapper, the smooth-ReLU surrogate."""

from .checkpoints import load_into, read_state_dict, save_weights
from .cifar_resnet import CifarResNet
from .fmnist_cnn import FashionCNN
from .normalize import (
           IMAGENET_MEAN,
           IMAGENET_STD,
           Normalize,
           NormalizedModel,
           get_layer,
           with_normalization,
)
from .smooth_relu import smooth_relu
from .spec import check_model_spec, get_card, load_model, model_card, parse_spec, read_labels
from .zoo import CARDS, ModelCard, model_names, register_model

__all__ = ["CARDS", "CifarResNet", "FashionCNN", "IMAGENET_MEAN", "IMAGENET_STD", "ModelCard",
           "Normalize", "NormalizedModel", "check_model_spec", "get_card", "get_layer", "load_into",
           "load_model", "model_card", "model_names", "parse_spec", "read_labels", "read_state_dict",
           "register_model", "save_weights", "smooth_relu", "with_normalization"]
