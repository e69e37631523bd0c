"""Signal processing the ELM way: channel names, the TCP montage, preprocessing, band power."""
