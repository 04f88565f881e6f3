"""Readers of real MRI datasets, each in its own on-disk format.

=============  ===========================================================  ========
name           dataset                                                      data
=============  ===========================================================  ========
``m4raw``      M4RAW 0.3 T brain (fastMRI-style HDF5, repetitions)          k-space
``fastmri``    fastMRI multi-coil brain / knee HDF5                         k-space
``skmtea``     SKM-TEA raw-data track (hybrid 3-D k-space, SENSE targets)   k-space
``cmrxrecon``  CMRxRecon cardiac cine / mapping (MATLAB v7.3)               k-space
``brats``      BraTS glioma NIfTI with tumour segmentations                 images
``paired``     paired clean / corrupted images (artefacts)                  images
=============  ===========================================================  ========

Every reader yields :class:`~mrilib.data.formats.base.SliceSample` records in the
fastMRI orientation; :func:`mrilib.data.datasets.open_dataset` is the entry point.
"""

from mrilib.data.formats.base import (
    DataFormat,
    DataFormatError,
    SliceSample,
    VolumeRef,
    normalise_contrast,
    parse_ismrmrd_header,
)
from mrilib.data.formats.brats import BraTS
from mrilib.data.formats.cmrxrecon import CMRxRecon
from mrilib.data.formats.fastmri import FastMRI
from mrilib.data.formats.m4raw import M4Raw
from mrilib.data.formats.paired import Paired
from mrilib.data.formats.skmtea import SkmTea

#: registry name -> reader class, in the order the book lists them
FORMATS: dict[str, type[DataFormat]] = {
    cls.name: cls for cls in (M4Raw, FastMRI, SkmTea, CMRxRecon, BraTS, Paired)
}

__all__ = [
    "FORMATS",
    "DataFormat",
    "DataFormatError",
    "SliceSample",
    "VolumeRef",
    "normalise_contrast",
    "parse_ismrmrd_header",
    "M4Raw",
    "FastMRI",
    "SkmTea",
    "CMRxRecon",
    "BraTS",
    "Paired",
]
