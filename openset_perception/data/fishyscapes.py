"""Fishyscapes validation sets (Lost & Found, Static), and the image + anomaly-mask reader they share.

Layout, as the public validation data is commonly redistributed (one folder per set, image and label
with the same file name)::

    ROOT/original/NAME.png   RGB image (.png, .jpg, .jpeg or .webp)
    ROOT/labels/NAME.png     uint8 anomaly label: 0 inlier, 1 anomaly, 255 void

ROOT may also be the folder holding both sets as ROOT/LostAndFound/ and ROOT/Static/; each reader then
uses its own subfolder. Frames are sorted by NAME and every image needs a label. Anomaly labels only; the
class names are the 19 Cityscapes classes the benchmark's models are trained on.
"""

from __future__ import annotations

from pathlib import Path

from openset_perception.data.cityscapes import cityscapes_info, require_dir
from openset_perception.data.image_files import read_png, read_rgb
from openset_perception.data.sample import Sample, validate_sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class AnomalyMaskDataset:
    """Images in ``image_dir`` with an anomaly mask ``label_dir/<image stem><label_suffix>`` each.

    With ``labelled_only`` images without a mask are left out (benchmarks that ship unlabelled test images
    beside the labelled validation ones); otherwise a missing mask is an error.
    """

    def __init__(
        self, image_dir: Path, label_dir: Path, label_suffix: str = ".png", labelled_only: bool = False
    ) -> None:
        require_dir(image_dir, "image folder")
        require_dir(label_dir, "label folder")
        self.image_dir, self.label_dir = image_dir, label_dir
        images = sorted(path for path in image_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        self.names: list[str] = []
        self.image_paths: list[Path] = []
        self.label_paths: list[Path] = []
        for image in images:
            label = label_dir / f"{image.stem}{label_suffix}"
            if not label.is_file():
                if labelled_only:
                    continue
                raise FileNotFoundError(f"image {image.name} has no label: expected {label}")
            if image.stem in self.names:
                raise ValueError(f"two images named {image.stem!r} in {image_dir}")
            self.names.append(image.stem)
            self.image_paths.append(image)
            self.label_paths.append(label)
        if not self.names:
            expected = f"images in {image_dir} with labels {label_dir}/NAME{label_suffix}"
            raise FileNotFoundError(f"no labelled images: expected {expected}")
        self.info = cityscapes_info(has_anomaly=True)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        sample = Sample(
            image=read_rgb(self.image_paths[index]),
            anomaly=read_png(self.label_paths[index]),
            name=self.names[index],
        )
        validate_sample(sample, self.info)
        return sample


def _set_folder(root: Path, subset: str) -> Path:
    """ROOT itself when it holds original/, else ROOT/<subset> when that does."""
    if not (root / "original").is_dir() and (root / subset / "original").is_dir():
        return root / subset
    return root


class FishyscapesLostAndFound(AnomalyMaskDataset):
    """Fishyscapes Lost & Found validation (100 frames); see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        folder = _set_folder(Path(root), "LostAndFound")
        super().__init__(folder / "original", folder / "labels")


class FishyscapesStatic(AnomalyMaskDataset):
    """Fishyscapes Static validation (30 frames); see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        folder = _set_folder(Path(root), "Static")
        super().__init__(folder / "original", folder / "labels")
