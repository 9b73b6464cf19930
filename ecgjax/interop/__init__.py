"""Importers for published PyTorch checkpoints: ST-MEM, ECGFounder (Net1D), ECG-FM.

`convert(source, checkpoint_path, out_dir)` writes an ordinary ecgjax export (CLI:
`python -m ecgjax.interop convert --from st-mem|ecgfounder|ecg-fm CHECKPOINT OUT_DIR`);
`convert_state_dict` works in memory on NumPy arrays. Only reading a .pth/.pt file needs torch
(`pip install 'ecgjax[torch]'`); the mappings and the exports they write do not.
"""

from ecgjax.interop.conversion import (
    SOURCES,
    Conversion,
    ConversionError,
    ConversionReport,
    convert,
    convert_state_dict,
    save_conversion,
)

__all__ = ["SOURCES", "Conversion", "ConversionError", "ConversionReport", "convert",
           "convert_state_dict", "save_conversion"]
