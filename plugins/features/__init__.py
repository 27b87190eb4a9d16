"""Item-feature plugins: sentence-encoder text features, BPR-trained collaborative features, precomputed files."""

from genrec_bench import hookimpl

from .collaborative import LightGCNFeatures, MFFeatures
from .file import FileFeatures
from .text import TextFeatures

__all__ = ["TextFeatures", "LightGCNFeatures", "MFFeatures", "FileFeatures"]


@hookimpl
def register_features(register):
    register("text", TextFeatures)
    register("lightgcn", LightGCNFeatures)
    register("mf", MFFeatures)
    register("file", FileFeatures)
