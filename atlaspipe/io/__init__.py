"""Getting bytes in and out: reading ROOT files, where samples are read from, downloads, the input
fence, atomic writes."""
