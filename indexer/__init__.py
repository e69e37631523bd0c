"""Turn an archive into something searchable: scan, preprocess, embed, store, query."""

from elmsearch._lazy import lazy_exports

_EXPORTS = {"ScanItem": "indexer.scan", "ScanSummary": "indexer.scan", "scan_archive": "indexer.scan"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
