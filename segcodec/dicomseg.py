"""Label maps as DICOM Segmentation objects (highdicom), for a PACS.

A ``.sgc`` carries no UIDs and no patient data, so the SEG is made where the source series is:
it copies the patient, study and frame of reference from the source images, references them,
and holds one BINARY segment per foreground label (the type most viewers display), named as the
model names its labels, with the model as the algorithm that made it.

    segcodec segment x.sgc -o seg.dcm --source series/
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

# Segment codes by a word in the label's name (SNOMED CT, through pydicom's code dictionary):
# (property category, property type).  Anything else is described as tissue.
_CODES = {"hippocampus": ("AnatomicalStructure", "Hippocampus"),
          "lesion": ("MorphologicallyAbnormalStructure", "Lesion")}


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:
        raise InputError("writing a DICOM Segmentation needs highdicom: "
                         "pip install 'segcodec[dicomseg]'") from exc
    return highdicom


def source_images(source: Path):
    """The source series (a folder) or image (a file), full datasets in slice order."""
    from .io import dicom
    paths = [p for p, _ in dicom.series(source)] if source.is_dir() else [source]
    return [dicom.read_dataset(p) for p in paths]


def frames(labels: np.ndarray, n_images: int, rows: int, columns: int) -> np.ndarray:
    """Labels in segcodec's voxel order -> (frame, row, column), one frame per source image.

    A series reads as (column, row, slice) in slice order and a single image as (row, column)
    (``segcodec.io.dicom``); InputError when the labels cannot be those of the source.
    """
    if labels.ndim == 3:
        out = labels.transpose(2, 1, 0)
    elif labels.ndim == 2:
        out = labels[None]
    else:
        out = None
    if out is None or out.shape != (n_images, rows, columns):
        raise InputError(f"the labels ({labels.shape}) are not those of the source "
                         f"({n_images} image(s) of {rows}x{columns}): was the .sgc made from "
                         "this series?")
    return np.ascontiguousarray(out)


def check_source(source: Path, shape) -> np.ndarray | None:
    """InputError unless ``source`` is a DICOM series (or image) of the coded image's shape;
    its RAS+ affine (None: it has no geometry), for the caller to compare with the file's.
    From the headers alone (the pixels are read once, by ``segmentation``)."""
    from .io import dicom
    in_order = dicom.series(source) if source.is_dir() \
        else [(source, dicom.read_dataset(source, stop_before_pixels=True))]
    headers = [ds for _, ds in in_order]
    if dicom.frames_of(headers[0]) > 1:
        raise InputError(f"{source}: a DICOM Segmentation of a multi-frame source is not made "
                         "yet; write the labels as .nii.gz")
    affine = dicom.series_affine(in_order) if source.is_dir() \
        else dicom.file_affine(headers[0], source)
    try:
        rows, columns = int(headers[0].Rows), int(headers[0].Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"{source}: not a DICOM image (no Rows and Columns)") from None
    frames(np.zeros(shape, np.uint8), len(headers), rows, columns)
    return affine


def segmentation(labels: np.ndarray, source: Path, label_names: list[str], model_name: str,
                 model_version: str):
    """The highdicom Segmentation of ``labels`` (value i = ``label_names[i]``, 0 background)."""
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    images = source_images(Path(source))
    pixels = frames(labels, len(images), int(images[0].Rows), int(images[0].Columns))
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, version=model_version, family=codes.DCM.ArtificialIntelligence)
    descriptions = []
    for number, name in enumerate(label_names[1:], start=1):
        category, kind = next((v for k, v in _CODES.items() if k in name.lower()),
                              ("Tissue", "Tissue"))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=getattr(codes.SCT, category),
            segmented_property_type=getattr(codes.SCT, kind),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    from . import __version__
    try:
        return hd.seg.Segmentation(
            source_images=images, pixel_array=pixels.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=int(getattr(images[0], "SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="segcodec",
            manufacturer_model_name=model_name, software_versions=__version__,
            device_serial_number="none", series_description=f"segcodec {model_name}",
            omit_empty_frames=False)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(f"{source}: cannot make a DICOM Segmentation of it ({exc})") from exc
