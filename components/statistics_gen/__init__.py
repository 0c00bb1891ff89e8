"""StatisticsGen: TFDV statistics per split, plus exact pixel and label histograms for drift checks."""
