"""The Kaggle Brain Tumor MRI dataset (Nickparvar) as a TensorFlow Datasets builder.

Importing this module registers `brain_tumor_mri`, so that
`tfds.builder('brain_tumor_mri', config='64px_c1', data_dir=...)` works. The
builder needs no TensorFlow: it writes array_record files and is read back with
`builder.as_data_source()`. Each config stores decoded, resized uint8 images,
so the prepared directory is itself the decoded cache.
"""
from __future__ import annotations

import dataclasses
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from datasets import cache
from datasets import folder
from datasets import imaging
from datasets import paths
from datasets.records import DataError, Source, make_split

KAGGLE_URL = 'https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset'
CLASS_NAMES = ('glioma', 'meningioma', 'notumor', 'pituitary')
# The official Training and Testing folders; `datasets.load` carves val from train.
_SPLITS = ('train', 'test')


@dataclasses.dataclass
class BrainTumorMriConfig(tfds.core.BuilderConfig):
  image_size: int = 64
  channels: int = 1


def config_for(image_size: int, channels: int) -> BrainTumorMriConfig:
  """The predefined config for this size, or a custom one named the same way."""
  name = f'{image_size}px_c{channels}'
  return BrainTumorMri.builder_configs.get(name) or BrainTumorMriConfig(
      name=name, image_size=image_size, channels=channels,
      description=f'{image_size}x{image_size}, {channels} channel(s)')


class BrainTumorMri(tfds.core.GeneratorBasedBuilder):
  """Brain tumour MRI: glioma, meningioma, no tumour, pituitary."""

  # Bump together with image_folder.DECODER_VERSION: both decode with datasets.imaging.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Decoded, resized uint8 images; array_record.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Download {KAGGLE_URL} and unpack it so that manual_dir holds '
      'Training/<class>/*.jpg and Testing/<class>/*.jpg.')
  BUILDER_CONFIGS = [
      BrainTumorMriConfig(name=f'{size}px_c{channels}', image_size=size, channels=channels,
                          description=f'{size}x{size}, {channels} channel(s)')
      for size in (32, 64, 128, 224) for channels in (1, 3)]
  DEFAULT_CONFIG_NAME = '64px_c1'

  def __init__(self, *, file_format: str = 'array_record', **kwargs):
    # The TFDS default, TFRecord, needs TensorFlow; array_record does not.
    super().__init__(file_format=file_format, **kwargs)

  # tfds 4.9.10 finds this file through `importlib_resources`, a backport it
  # requires only on Python < 3.9 and so is absent here; the answer is this file.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(
                shape=(c.image_size, c.image_size, c.channels), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
            'id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage=KAGGLE_URL,
        # Files that failed to decode; `datasets.load` applies the on_corrupt policy.
        metadata=tfds.core.MetadataDict(corrupt_skipped=[]),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    scan = scan_manual_dir(os.fspath(dl_manager.manual_dir))
    return {split: self._generate_examples(scan.files[split]) for split in _SPLITS}

  def _generate_examples(self, files: tuple[folder.ImageFile, ...]):
    c = self.builder_config
    decoded = imaging.decode_all([f.path for f in files], c.image_size, c.channels)
    for f, result in zip(files, decoded):
      if isinstance(result, Exception):
        self.info.metadata['corrupt_skipped'].append(
            [f.id, f'{type(result).__name__}: {result}'])
        continue
      yield f.id, {'image': result, 'label': f.label, 'id': f.id}


def scan_manual_dir(root: str) -> folder.FolderScan:
  """The Kaggle folder's files; DataError unless it has the Kaggle layout."""
  if not os.path.isdir(root):
    raise DataError(
        f'brain_tumor_mri not found at {root}; download {KAGGLE_URL} and unpack it as '
        f'{root}/Training/<class>/*.jpg and {root}/Testing/<class>/*.jpg '
        '(or pass --data_dir / set MEDNAS_DATA_DIR to the folder that holds brain_tumor_mri)')
  scan = folder.scan(root)
  if sorted(scan.files) != sorted(_SPLITS) or scan.class_names != CLASS_NAMES:
    raise DataError(
        f'{root} is not the Kaggle layout: expected Training/ and Testing/ with classes '
        f'{", ".join(CLASS_NAMES)}; found splits {sorted(scan.files)} and classes '
        f'{", ".join(scan.class_names)}. Use dataset image_folder for other trees')
  return scan


def load_source(name: str, *, data_dir: str | None, image_size: int, channels: int, seed: int,
                cache_dir: str | None) -> Source:
  """Prepares the TFDS builder under the cache (once per source fingerprint) and reads it."""
  del name, seed
  root = os.path.join(data_dir or paths.default_data_dir(), 'brain_tumor_mri')
  scan = scan_manual_dir(root)
  # A changed source gets a new TFDS data_dir, hence a fresh build.
  tfds_dir = os.path.join(cache.cache_dir(cache_dir), 'tfds', scan.fingerprint)
  config = config_for(image_size, channels)
  with cache.exclusive(os.path.join(tfds_dir, f'{config.name}.lock')):
    # Made under the lock: a builder reads its state on creation, and another
    # process may have just finished building it.
    builder = BrainTumorMri(data_dir=tfds_dir, config=config)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=root))
  sources = builder.as_data_source()
  splits = {}
  for split in _SPLITS:
    data = sources[split]
    records = sorted(data.__getitems__(list(range(len(data)))), key=lambda r: r['id'])
    splits[split] = make_split(
        np.stack([r['image'] for r in records]) if records else
        np.zeros((0, image_size, image_size, channels), np.uint8),
        np.array([r['label'] for r in records], np.int32),
        tuple(r['id'].decode() for r in records))
  corrupt = tuple((i, reason) for i, reason in builder.info.metadata['corrupt_skipped'])
  return Source(train=splits['train'], val=None, test=splits['test'],
                class_names=CLASS_NAMES, source=root, corrupt=corrupt)
