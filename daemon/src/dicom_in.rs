//! Reading CT series from DICOM files: grouping, choosing the series, decoding pixels.
