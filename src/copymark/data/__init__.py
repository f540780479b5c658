"""copymark.data: image datasets, transforms, splits and built-in samples.

- :mod:`~copymark.data.folders`: map-style Datasets over folders (:class:`ImageFolder`,
  :class:`PairedFolders`, :class:`UnpairedFolders`, :class:`ClassFolders`, :class:`SRPairs`),
  each validating its folders up front with a :class:`~copymark.errors.DataError`.
- :mod:`~copymark.data.transforms`: random crop / paired SR crop / flip applied identically to
  a group of images from an explicit generator, and the ``resize_policy`` for mixed sizes.
- :mod:`~copymark.data.splits`: deterministic train/val/test split by hashed key + JSON manifest.
- :mod:`~copymark.data.samples`: photographs shipped in the scikit-image / scikit-learn wheels.
- :mod:`~copymark.data.loading`: :func:`loader`, a DataLoader deterministic given its seed.
"""

from copymark.data.folders import (
    ClassFolders,
    ImageFolder,
    PairedFolders,
    SRPairs,
    UnpairedFolders,
    image_files,
    image_size,
)
from copymark.data.loading import collate, loader
from copymark.data.samples import (
    Sample,
    SampleInfo,
    SampleSplit,
    sample_info,
    sample_names,
    sample_path,
    sample_split,
    samples,
    samples_to_folder,
)
from copymark.data.splits import (
    SplitManifest,
    assign_split,
    hash_fraction,
    read_split_manifest,
    split_keys,
    subset,
    write_split_manifest,
)
from copymark.data.transforms import (
    Compose,
    PairedRandomCrop,
    RandomCrop,
    RandomHFlip,
    Transform,
    apply_size_policy,
    item_generator,
    paired_random_crop,
    random_crop,
    random_hflip,
)

__all__ = [
    "ClassFolders",
    "Compose",
    "ImageFolder",
    "PairedFolders",
    "PairedRandomCrop",
    "RandomCrop",
    "RandomHFlip",
    "SRPairs",
    "Sample",
    "SampleInfo",
    "SampleSplit",
    "SplitManifest",
    "Transform",
    "UnpairedFolders",
    "apply_size_policy",
    "assign_split",
    "collate",
    "hash_fraction",
    "image_files",
    "image_size",
    "item_generator",
    "loader",
    "paired_random_crop",
    "random_crop",
    "random_hflip",
    "read_split_manifest",
    "sample_info",
    "sample_names",
    "sample_path",
    "sample_split",
    "samples",
    "samples_to_folder",
    "split_keys",
    "subset",
    "write_split_manifest",
]
