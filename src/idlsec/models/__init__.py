"""Classifiers with normalisation inside: the zoo, the Normalize wrapper, the smooth-ReLU surrogate."""

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
from .zoo import CARDS, ModelCard, get_card, load_model, model_names, register_model

__all__ = ["CARDS", "CifarResNet", "FashionCNN", "IMAGENET_MEAN", "IMAGENET_STD", "ModelCard", "Normalize",
           "NormalizedModel", "get_card", "get_layer", "load_into", "load_model", "model_names",
           "read_state_dict", "register_model", "save_weights", "smooth_relu", "with_normalization"]
