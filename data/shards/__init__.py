"""Training shards: webdataset-layout tar files + a manifest (counts, bytes, sha256 per shard).

``tar_index`` reads any webdataset tar (ours or LAION/open_clip's), ``manifest`` holds what a
set of shards contains, ``writer`` turns JSON lists into shards (``python -m data.prepare``),
``order`` fixes each epoch's sample order, ``dataset`` reads samples for training.
"""
