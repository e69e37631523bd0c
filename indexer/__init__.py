"""Turn an archive into something searchable: scan, preprocess, embed, store, query."""

from indexer.scan import ScanItem, ScanSummary, scan_archive

__all__ = ["ScanItem", "ScanSummary", "scan_archive"]
