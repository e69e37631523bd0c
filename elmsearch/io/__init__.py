"""Reading recordings: headers, signal sources, checks, chunks and the windowed recording.

- ``header``: EDF/BDF headers validated byte by byte; BrainVision and EEGLAB headers through MNE.
- ``source``: the ``SignalSource`` protocol; ``open_source`` picks ``edf_mmap`` or MNE.
- ``edf_mmap``: the memory-mapped EDF/BDF source (MNE's values bit for bit).
- ``meta``: header checks for ELM (montage electrodes, rates, duration) and ``RecordingMeta``.
- ``checks``: what makes samples unusable, and which windows carry EEG.
- ``chunks``: preprocessing a long recording in overlapping chunks (numpy only).
- ``recording``: ``PreprocessedRecording`` in memory and ``make_windows``.
- ``windowed``: ``WindowedRecording``, the one path from a file to checked windows.
- ``window_store``: ``WindowStore``, preprocessed windows kept on disk by content (index, train, eval).

Nothing is imported here, so that importing one module does not import the others.
"""
