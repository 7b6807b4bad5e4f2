"""Readers of export formats: each turns a root folder into :class:`~dataset_conversion.sources.inhouse.CaseEntry`
records (paths, level names, subject links) without reading voxels; :mod:`.volume` reads the voxels of any entry
(NIfTI, NRRD, MHA files or DICOM series folders)."""
