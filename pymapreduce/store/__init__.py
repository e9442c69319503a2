"""Inputs and outputs as URLs (``s3://``, ``gs://``, ``http(s)://``, ``file://``... all
that fsspec knows): listing and byte-range reads (``urls.py``), reducers writing part
files straight to the output and the job's atomic commit (``output.py``). See
docs/store.md."""
