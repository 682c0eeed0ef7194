"""The paper's datasets as data: folder layout, class names, task noun, causes, clusters."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from reprogram.errors import ReprogramError


@dataclass(frozen=True)
class DatasetInfo:
    """Everything reprogram knows about one published dataset."""

    name: str
    folder: str  # sub-folder of --root (CoOp layout)
    image_dir: str  # images, relative to the dataset folder
    split_file: str | None  # CoOp split JSON, relative to the dataset folder (None: own format)
    description_key: str  # prefix of the published description files
    task: str  # noun used in description prompts
    causes: tuple[str, ...]  # DVP-cse causes 1..3 (further groups where published)
    clusters: int  # DVP-cls default v
    aliases: tuple[tuple[str, str], ...] = ()  # raw split-file name -> published class name
    other_split_files: tuple[str, ...] = ()  # other names the split file is found under
    layout: str = "coop"  # coop | imagenet | imagenet-wnid | imagenet-v2 (see readers)
    other_folders: tuple[str, ...] = ()  # other sub-folders of --root it is found under
    eval_only: bool = False  # a test set only (ImageNet's shifted targets)
    parent: str = ""  # dataset whose classes (and descriptions) it shares

    @property
    def split_files(self) -> tuple[str, ...]:
        """Names the split file may have (the first is the published one)."""
        return ((self.split_file,) if self.split_file else ()) + self.other_split_files

    @property
    def classnames(self) -> list[str]:
        """Class names in label order, spelled as in the published description files."""
        folder = resources.files("reprogram") / "assets" / "classnames"
        text = (folder / f"{self.parent or self.name}.txt").read_text(encoding="utf-8")
        return [line for line in text.splitlines() if line]


EUROSAT_ALIASES = (
    ("AnnualCrop", "Annual Crop Land"),
    ("Forest", "Forest"),
    ("HerbaceousVegetation", "Herbaceous Vegetation Land"),
    ("Highway", "Highway or Road"),
    ("Industrial", "Industrial Buildings"),
    ("Pasture", "Pasture Land"),
    ("PermanentCrop", "Permanent Crop Land"),
    ("Residential", "Residential Buildings"),
    ("River", "River"),
    ("SeaLake", "Sea or Lake"),
)
CALTECH_ALIASES = (
    ("Faces", "face"),
    ("Faces_easy", "face"),
    ("Leopards", "leopard"),
    ("Motorbikes", "motorbike"),
    ("airplanes", "airplane"),
)

# fmt: off
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("caltech101", "caltech-101", "101_ObjectCategories",
                    "split_zhou_Caltech101.json", "caltech101", "object",
                    ("shape", "color", "texture"), 3, CALTECH_ALIASES),
        DatasetInfo("dtd", "dtd", "images", "split_zhou_DescribableTextures.json", "dtd",
                    "texture",
                    ("pattern", "coarseness/granularity", "contrast", "directionality",
                     "regularity", "roughness", "entropy"), 3),
        DatasetInfo("eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json", "eurosat",
                    "remote sensing land cover",
                    ("texture", "spectral information", "spatial characteristics"), 1,
                    EUROSAT_ALIASES),
        DatasetInfo("fgvc_aircraft", "fgvc_aircraft", "images", None, "fgvc", "aircraft model",
                    ("shape and structure", "size and proportions", "surface features",
                     "engine configuration", "wing configuration", "tail design",
                     "landing gear configuration"), 3),
        DatasetInfo("food101", "food-101", "images", "split_zhou_Food101.json", "food101", "food",
                    ("texture", "shape and composition", "color"), 2),
        DatasetInfo("oxford_flowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                    "oxford_flowers", "flower",
                    ("flower structure", "shape of the petals", "color", "size of the flower",
                     "fragrance", "leaf characteristics", "flowering time and growth habit"), 3),
        DatasetInfo("oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json",
                    "oxford_pets", "pet",
                    ("fur or coat type", "species and body shape", "facial features"), 3),
        DatasetInfo("stanford_cars", "stanford_cars", "", "split_zhou_StanfordCars.json",
                    "stanford_cars", "fine-grained automobile",
                    ("front and rear design", "shape and body style", "wheels and rims"), 3),
        DatasetInfo("sun397", "sun397", "SUN397", "split_zhou_SUN397.json", "sun397", "scene",
                    ("spatial layout and composition", "texture", "color and lighting"), 3),
        DatasetInfo("ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "ucf101",
                    "action",
                    ("motion and poses", "contextual elements", "intensity and speed"), 2),
        # BlackVIP layout: resisc45/NWPU-RESISC45/<class>/*.jpg, resisc45/split_mlai_Resisc45.json
        DatasetInfo("resisc45", "resisc45", "NWPU-RESISC45", "split_mlai_Resisc45.json",
                    "resisc45", "remote sensing scene",
                    ("spectral information", "texture", "spatial characteristics"), 3,
                    other_split_files=("split_zhou_Resisc45.json", "split_zhou_RESISC45.json",
                                       "split_mlai_RESISC45.json")),
    )
}

# ImageNet (AttrVR's twelfth task) and its shifted test sets, in CoOp's layouts; their class
# lists come from the user's classnames.txt (``wnid name`` lines), the packaged list is CoOp's.
IMAGENET_FAMILY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("imagenet", "imagenet", "images", None, "imagenet", "object",
                    (), 3, layout="imagenet"),
        DatasetInfo("imagenet_v2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                    None, "imagenet", "object", (), 3, layout="imagenet-v2", eval_only=True,
                    parent="imagenet", other_folders=("imagenet_v2", "imagenet-v2")),
        DatasetInfo("imagenet_sketch", "imagenet-sketch", "images", None, "imagenet",
                    "object", (), 3, layout="imagenet-wnid", eval_only=True, parent="imagenet",
                    other_folders=("sketch", "imagenet_sketch")),
        DatasetInfo("imagenet_a", "imagenet-adversarial", "imagenet-a", None, "imagenet",
                    "object", (), 3, layout="imagenet-wnid", eval_only=True, parent="imagenet",
                    other_folders=("imagenet_a", "imagenet-a")),
        DatasetInfo("imagenet_r", "imagenet-rendition", "imagenet-r", None, "imagenet",
                    "object", (), 3, layout="imagenet-wnid", eval_only=True, parent="imagenet",
                    other_folders=("imagenet_r", "imagenet-r")),
    )
}
# fmt: on
ALIASES = {
    "fgvc": "fgvc_aircraft",
    "flowers102": "oxford_flowers",
    "resisc": "resisc45",
    "imagenetv2": "imagenet_v2",
    "imagenet-v2": "imagenet_v2",
    "imagenet-sketch": "imagenet_sketch",
    "imagenet-a": "imagenet_a",
    "imagenet-r": "imagenet_r",
}


def dataset_info(name: str) -> DatasetInfo:
    """Look up a published dataset by name (``fgvc`` is accepted for ``fgvc_aircraft``)."""
    key = ALIASES.get(name, name)
    if key in IMAGENET_FAMILY:
        return IMAGENET_FAMILY[key]
    if key not in DATASETS:
        known = ", ".join([*DATASETS, *IMAGENET_FAMILY])
        raise ReprogramError(
            f"unknown dataset '{name}' (known: {known}; or folder:PATH / csv:FILE)"
        )
    return DATASETS[key]


def is_published(name: str) -> bool:
    """Whether ``name`` is a catalogued dataset (the paper's, ImageNet or one of its targets)."""
    key = ALIASES.get(name, name)
    return key in DATASETS or key in IMAGENET_FAMILY


def dataset_classnames(name: str) -> list[str]:
    """Class names of a published dataset, in label order."""
    return dataset_info(name).classnames
