//! Entry points for fuzz targets and their corpus regression tests. Work in progress.
