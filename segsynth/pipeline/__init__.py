"""The Ray layer: Data, Train and Serve glue. Thin; the work lives in the numpy/torch core."""
