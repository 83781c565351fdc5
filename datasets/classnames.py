"""Class orders of every dataset (docs/method.md#datasets): label = position in the list.

`*_CLASSES` are the names used for labels (folder names, synsets), `*_PROMPTS` the names put
into the prompts "image of a {name}".
"""
from typing import List

MODELNET40_CLASSES: List[str] = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
]
# Only the five two-word folder names change: the underscore becomes a space.
MODELNET40_PROMPTS: List[str] = [name.replace("_", " ") for name in MODELNET40_CLASSES]

MODELNET10_CLASSES: List[str] = [
    "bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet",
]
# The paper's ModelNet10 prompts keep the folder names as they are (night_stand).
MODELNET10_PROMPTS: List[str] = list(MODELNET10_CLASSES)

SCANOBJECTNN_CLASSES: List[str] = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
]
SCANOBJECTNN_PROMPTS: List[str] = list(SCANOBJECTNN_CLASSES)

SHAPENET55_SYNSETS: List[str] = [
    "02691156", "02747177", "02773838", "02801938", "02808440", "02818832", "02828884", "02843684",
    "02871439", "02876657", "02880940", "02924116", "02933112", "02942699", "02946921", "02954340",
    "02958343", "02992529", "03001627", "03046257", "03085013", "03207941", "03211117", "03261776",
    "03325088", "03337140", "03467517", "03513137", "03593526", "03624134", "03636649", "03642806",
    "03691459", "03710193", "03759954", "03761084", "03790512", "03797390", "03928116", "03938244",
    "03948459", "03991062", "04004475", "04074963", "04090263", "04099429", "04225987", "04256520",
    "04330267", "04379243", "04401088", "04460130", "04468005", "04530566", "04554684",
]
SHAPENET55_PROMPTS: List[str] = [
    "airplane", "ashcan", "bag", "basket", "bathtub", "bed", "bench", "birdhouse", "bookshelf",
    "bottle", "bowl", "bus", "cabinet", "camera", "can", "cap", "car", "cellular telephone", "chair",
    "clock", "computer keyboard", "dishwasher", "display", "earphone", "faucet", "file", "guitar",
    "helmet", "jar", "knife", "lamp", "laptop", "loudspeaker", "mailbox", "microphone", "microwave",
    "motorcycle", "mug", "piano", "pillow", "pistol", "pot", "printer", "remote control", "rifle",
    "rocket", "skateboard", "sofa", "stove", "table", "telephone", "tower", "train", "vessel",
    "washer",
]

# `<synset>-<model>` ids left out of ShapeNet55 because the renderings lack them; compared for
# equality with a list line minus ".npy" (the two bare-synset entries match only such lines).
SHAPENET55_EXCLUDED: List[str] = [
    "03001627-udf068a6b", "03001627-u6028f63e", "03001627-uca24feec", "04379243-", "02747177-",
    "03001627-u481ebf18", "03001627-u45c7b89f", "03001627-ub5d972a1", "03001627-u1e22cc04",
    "03001627-ue639c33f",
]

assert len(MODELNET40_CLASSES) == 40 and len(MODELNET10_CLASSES) == 10
assert len(SCANOBJECTNN_CLASSES) == 15
assert len(SHAPENET55_SYNSETS) == 55 == len(SHAPENET55_PROMPTS)
assert SHAPENET55_SYNSETS == sorted(SHAPENET55_SYNSETS)
