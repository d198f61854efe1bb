"""Files in and out: checkpoints, their spec, hub folders, microsoft/CvT experiment files.

- :mod:`ecvit.io.checkpoint`: safe reading (``weights_only`` pickle, safetensors) and atomic writing;
- :mod:`ecvit.io.spec`: the typed model description a checkpoint carries;
- :mod:`ecvit.io.folders` / :mod:`ecvit.io.hub`: hub-style model folders, read / written;
- :mod:`ecvit.io.official_cvt`: microsoft/CvT experiment files translated into our config;
- :mod:`ecvit.io.weights`: the one place any weights source becomes a model.

Importing this package imports none of them (and no torch).
"""
