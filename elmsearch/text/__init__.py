"""Report text: sections, sentences and training segments."""
