"""Archives: recordings and their reports in a folder tree, patient identity, label files.

TUH, TUAB, BIDS and flat layouts (``discovery``, ``tuh``), ``--patients`` mappings and label
CSV files (``labels``).
"""
