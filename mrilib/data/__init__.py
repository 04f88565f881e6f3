"""Data: the embedded brain dataset, coil maps, k-space simulation and the fastMRI layout.

The embedded default needs no download: :func:`generate_embedded_dataset` renders
subjects from the MNI152 template that ships inside nilearn's wheel and writes them
as fastMRI multi-coil HDF5 volumes that :func:`varnet_dataset` (fastMRI's
``SliceDataset`` + ``VarNetDataTransform``) reads unchanged. :func:`prepare_dataset`
puts a run's dataset, embedded or real, in ``RunLayout.data``. Optional heavy readers
(nilearn, nibabel, scikit-image, Pillow) are imported only by the functions that need them.
"""

from mrilib.data.artefacts import PairedImageDataset, metal_corrupt, motion_corrupt, sample_motion
from mrilib.data.brain import CONTRASTS, render_subject, sample_subject
from mrilib.data.coils import birdcage_maps, normalise_maps
from mrilib.data.datasets import DATASETS, RealDataset, dataset_table, open_dataset, parse_dataset_spec
from mrilib.data.embedded import SPLITS, generate_embedded_dataset, generate_subject
from mrilib.data.formats import SliceSample, VolumeRef
from mrilib.data.h5layout import DataFormatError, ismrmrd_header, read_volume, validate_volume, write_volume
from mrilib.data.kspace import fft2c, ifft2c, rss, simulate_kspace
from mrilib.data.loading import make_mask_func, undersample, varnet_dataset, volume_files, zero_filled_rss
from mrilib.data.prepare import prepare_dataset

__all__ = [
    "CONTRASTS",
    "SPLITS",
    "DataFormatError",
    "birdcage_maps",
    "fft2c",
    "generate_embedded_dataset",
    "generate_subject",
    "ifft2c",
    "ismrmrd_header",
    "make_mask_func",
    "normalise_maps",
    "read_volume",
    "render_subject",
    "rss",
    "sample_subject",
    "simulate_kspace",
    "validate_volume",
    "write_volume",
    "varnet_dataset",
    "volume_files",
    "undersample",
    "zero_filled_rss",
    "prepare_dataset",
    "DATASETS",
    "RealDataset",
    "dataset_table",
    "open_dataset",
    "parse_dataset_spec",
    "SliceSample",
    "VolumeRef",
    "PairedImageDataset",
    "metal_corrupt",
    "motion_corrupt",
    "sample_motion",
]
