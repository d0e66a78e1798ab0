"""The cutouts stage: catalog photos, image+mask pairs and RGBA files -> a cutout library.

``config`` (CutoutsConfig), ``extract`` (the extractor and source readers), ``manifest`` (the
library on disk and the worker), ``job`` (Ray Data: the only module importing Ray).
"""
