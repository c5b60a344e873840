"""Differentiable rotation of a batch of images by an angle in degrees.

The angle may be a tensor that requires grad (the hyperparameter lambda):
the rotation is an affine sampling grid (F.affine_grid) read with bilinear
interpolation (F.grid_sample), both differentiable in the grid, so
d(loss)/d(angle) flows back through the pixels. Images are rotated about
their centre; what comes in from outside the frame is 0 (the black
background of Fashion-MNIST, so rotate raw [0, 1] images and normalise
afterwards). Positive angles turn the picture counter-clockwise as displayed
(row 0 at the top), the usual convention of image libraries."""
import math

import torch
from torch.nn import functional as F


def rotation_matrix(degrees: torch.Tensor, n: int) -> torch.Tensor:
    """[n, 2, 3] affine matrices of affine_grid for a rotation by `degrees`
    (a scalar tensor, or one angle per image)."""
    rad = degrees * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(c)
    # affine_grid maps each output pixel (x right, y down, in [-1, 1]) to
    # the input point it reads; reading from R(+degrees) of it moves the
    # content by R(-degrees) in a y-down frame: counter-clockwise on screen
    # (a bar at the top goes to the left for +90, checked in the tests).
    m = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)
    return m.expand(n, 2, 3) if m.dim() == 2 else m


def rotate(images: torch.Tensor, degrees) -> torch.Tensor:
    """images [N, C, H, W] (H == W, so normalised coordinates are isotropic)
    rotated by `degrees` (float or tensor); differentiable in both."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotate expects square images [N, C, H, W], got {tuple(images.shape)}")
    if not isinstance(degrees, torch.Tensor):
        degrees = torch.tensor(float(degrees))
    degrees = degrees.to(images.dtype).reshape(degrees.shape[:1] if degrees.dim() else ())
    grid = F.affine_grid(rotation_matrix(degrees, images.shape[0]), list(images.shape),
                         align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
