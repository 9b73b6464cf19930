"""Data layer: spec -> source -> per-record transforms -> grain batches."""

from ecgjax import leads
from ecgjax.leads import (
    LEADS_12,
    LIMB_LEADS,
    PRECORDIAL_LEADS,
    canonical_lead,
    lead_indices,
    parse_leads,
    reorder,
)
from ecgjax.data.specs import (
    DataSpec,
    Option,
    known_formats,
    parse_folds,
    parse_spec,
    register_format,
)
from ecgjax.data.sources import (
    BadRecordError,
    LeadSelectedSource,
    Record,
    Source,
    SubsetSource,
    make_record,
    open_source,
    select_folds,
)
from ecgjax.data.formats.synthetic import LABEL_NAMES as SYNTHETIC_LABELS
from ecgjax.data.formats.synthetic import SyntheticSource, generate_record
from ecgjax.data.transforms import (
    Preprocessing,
    bandpass,
    crop_or_pad,
    crop_starts,
    ecg_fm_preprocessing,
    random_crop,
    resample,
    st_mem_preprocessing,
    standardize,
)
from ecgjax.data.formats.npy import NpySource
from ecgjax.data.formats.prepared import (
    PreparedMismatchError,
    PreparedSource,
    prepare_record,
)
from ecgjax.data import batch
from ecgjax.data.batch import check_batch, example_batch, train_example
from ecgjax.data.images import ImagePreprocessing
from ecgjax.data.eval_pipeline import eval_batches
from ecgjax.data.pipeline import (
    TooManyBadRecordsError,
    bad_record_count,
    check_bad_fraction,
    train_dataset,
    train_iterator,
)
