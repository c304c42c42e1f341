"""The embedded dataset: small synthetic images so that every hexa command runs out of the box.

A seeded, deterministic generator of 64x64 pictures of ten procedural shape classes (one large, roughly
upright, plain-coloured object on a plain backdrop, both colours from a palette of four), ten held-out
shapes for few-shot, and 128x128 multi-object scenes with boxes and masks. A smoke-test and teaching
dataset, not a benchmark; the README's embedded-data and Reproduction sections say what it is for and
why it is drawn this way.

Layout under `embedded_root()` (`$HEXA_DATA_HOME/embedded-v2`, default `~/.cache/hexa_zoo/data`):

    classify/{train,val,test}/<class>/<nnnn>.png   64x64 RGB, 200/40/40 per class (ImageFolder)
    fewshot/<heldout_class>/<nnnn>.png             64x64 RGB, 40 per held-out class
    VOCdevkit/VOC2007/Annotations/<id>.xml          VOC XML, boxes 1-based inclusive
    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt and <cls>_<split>.txt (1/-1/0)
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg           128x128 scenes: 400 trainval, 200 test
    coco/annotations/instances_{train,val}.json     the same scenes (train = trainval, val = test)
    coco/{train,val}/<id>.jpg
    manifest.json                                   version, seed, counts, sha256 fingerprint

Modules, bottom up: `spec` (sizes, seed, random streams), `shapes`, `drawing` (palette, painting, the
one-object images), `scenes`, `writers` (the file formats), `manifest` (one copy and its fingerprint),
`cache` (where it lives, built once; `resolve_data`).
"""

from .cache import FOLDER_NAME, data_home, embedded_root, resolve_data
from .drawing import HELDOUT_COLOURS, PALETTE, render_classify_image, render_fewshot_image
from .manifest import fingerprint, generate, read_manifest
from .scenes import Scene, SceneObject, render_scene
from .shapes import CLASSES, HELDOUT_CLASSES, SHAPES
from .spec import DEFAULT_SPEC, FORMAT_VERSION, EmbeddedSpec

__all__ = ["CLASSES", "DEFAULT_SPEC", "FOLDER_NAME", "FORMAT_VERSION", "HELDOUT_CLASSES", "HELDOUT_COLOURS",
           "PALETTE", "SHAPES", "EmbeddedSpec", "Scene", "SceneObject", "data_home", "embedded_root",
           "fingerprint", "generate", "read_manifest", "render_classify_image", "render_fewshot_image",
           "render_scene", "resolve_data"]
