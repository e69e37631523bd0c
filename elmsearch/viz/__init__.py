"""Pictures: EEG traces, spectrograms and evaluation plots (matplotlib's object API)."""
