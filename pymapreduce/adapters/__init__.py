"""Adapters that run jobs written for other MapReduce frameworks on pymapreduce.

- :mod:`pymapreduce.adapters.mrjob`: ``MRJob`` subclasses, unchanged.
"""
