"""From merged histograms to what a physicist reads: the results document, statistics, plots, tables, the report."""
