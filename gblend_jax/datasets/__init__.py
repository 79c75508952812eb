"""The data sets' TFDS builders, one subpackage per data set.

``gblend_jax/datasets/<name>/<name>_dataset_builder.py`` holds class
``Builder``; ``gblend_jax.data.get_builder(name)`` imports it on first use
(``gblend_jax.data.DATASETS`` lists the names). The data itself lives in a
data directory (``$GBLEND_DATA_DIR``; ``data/`` in the repository), never in
the package.
"""
