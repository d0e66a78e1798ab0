"""The rooms stage: empty rooms from Stable Diffusion -> a background library.

``config`` (RoomsConfig), ``prompts`` (prompt bank and quality gate), ``generator`` (the
diffusers pipeline behind a map_batches callable), ``library`` (the library on disk), ``job``
(Ray Data: the only module importing Ray).
"""
