"""Structured config schema, registered in Hydra's ConfigStore.

The dataclasses here define which keys exist, their types and their defaults (the one place for
defaults): a mistyped key or a wrong type fails at compose time with Hydra's own message. The YAML
files under ``configs/`` only set what differs from these defaults (a data set, an experiment).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class RunConfig:
    name: str = "${data.name}"
    dir: str = "outputs/${run.name}"
    # Run the stages whose outputs this one needs when they are missing or out of date (idc.pipeline);
    # false: refuse with an error naming the make target instead (for scripted runs on a cluster).
    auto: bool = True
    # Re-run the requested stage even when its outputs are up to date.
    force: bool = False


@dataclass
class CohortConfig:
    """The patients the sanity and leaderboard stages evaluate on (docs/attribution-evaluation.md, "Enough
    patients"). Synthetic data: `patients` extra patients drawn by the same generator (every other data.*
    value unchanged) with `seed` instead of data.seed, under their own root, indexed like the test split and
    never trained on. 0 patients, or real data: the test split (on the Kaggle set every test patient)."""

    patients: int = 0
    seed: int = 1
    # null: beside the data set's folder, `<data.root>/../../<data.name>_cohort/<root's name>` and `.../masks`
    root: Optional[str] = None
    masks_dir: Optional[str] = None


@dataclass
class SiteConfig:
    """One staining protocol of a site-shift cohort (`data.sites`; docs/data.md, "Site shift"): how one lab
    stains and scans. Each of its patients still draws its own stain perturbation around these values."""

    name: str = MISSING
    # Optical-density vectors (R, G, B) of haematoxylin and eosin; null = the generator's (idc.data.tissue).
    hematoxylin: Optional[List[float]] = None
    eosin: Optional[List[float]] = None
    # Multiply each patient's haematoxylin and eosin amounts (dye concentration, staining time).
    h_intensity: float = 1.0
    e_intensity: float = 1.0
    # Light through empty glass, per channel (R, G, B) in grey levels: the background colour (white balance).
    background: List[float] = field(default_factory=lambda: [245.0, 245.0, 245.0])
    # Gaussian sigma (px) of the scanner's optics; null = the generator's (idc.data.cells.OPTICS_SIGMA, 0.6).
    blur: Optional[float] = None


@dataclass
class DataConfig:
    # "synthetic": generate (once, deterministically) a Kaggle-layout set under `root`;
    # "kaggle": index an existing set under `root` (the folder holding <pid>/<0|1>/*.png).
    name: str = "synthetic"
    source: str = "synthetic"
    root: str = MISSING
    # Pixel ground truth of the synthetic set (<masks_dir>/<pid>.npz); null for real data.
    masks_dir: Optional[str] = None
    patch_size: int = 50
    # Stain normalization of every patch, once, when the packed cache is built: null (off) | macenko | reinhard
    # (torchstain), to a reference patch chosen from the training split with `seed` (docs/data.md).
    stain_normalize: Optional[str] = None
    # Use only the first N patients (sorted by id); null = all. For synthetic data: how many to generate.
    num_patients: Optional[int] = None
    # The evaluation cohort of `make sanity` and `make leaderboard` (CohortConfig above).
    cohort: CohortConfig = field(default_factory=CohortConfig)
    # Patient-level split, as the book: train_test_split(pids, test_size=0.4, random_state=24),
    # then the held-out part split in half (val / test) with the same seed.
    split_seed: int = 24
    test_size: float = 0.4
    val_share_of_holdout: float = 0.5
    # Synthetic generator only.
    seed: int = 0
    patches_per_patient: int = 400
    idc_fraction_min: float = 0.05
    idc_fraction_max: float = 0.7
    edge_patch_prob: float = 0.02
    # How far IDC nuclei are from benign ones: 0 = very different (large, pleomorphic, vesicular),
    # 1 = drawn like benign nuclei (no signal). Default chosen by measurement (docs/data.md).
    difficulty: float = 0.0
    # Planted shortcut (data=synthetic_shortcut): share of patches with an ink-dot cue, by class in
    # train/val patients, and for both classes alike in test patients. All 0 = no cue.
    cue_train_positive: float = 0.0
    cue_train_negative: float = 0.0
    cue_test: float = 0.0
    # Site-shift cohort (data=synthetic_sites): staining protocols (SiteConfig), assigned to the patients
    # round-robin in patient-id order; empty = one protocol, the generator's (the default set, unchanged).
    sites: List[SiteConfig] = field(default_factory=list)
    # The site whose patients are the test split (never seen in training); the other sites' patients are
    # split train / val by patient. null = the patient split above over every site.
    test_site: Optional[str] = None
    workers: int = 0  # 0 = all cores
    # EDA figures written by prepare_data.
    eda_figures: bool = True
    # Patches whose x or y (from the file name) exceeds this are skipped and counted at index time
    # (the real slides stay below ~5000 px); stitched figures of large slides are drawn downsampled.
    max_coordinate: int = 20000


@dataclass
class ModelConfig:
    arch: str = "resnet18"
    head: List[int] = field(default_factory=lambda: [512, 256])
    dropout: float = 0.5
    num_classes: int = 2
    # null (default, offline) or "imagenet" (needs the torchvision weights file in the local cache).
    weights: Optional[str] = None


@dataclass
class AugmentConfig:
    """Training augmentation, drawn per image from the loader's generator seeded by (seed, epoch): a resumed
    epoch repeats it exactly (idc.data.augment; docs/training.md)."""

    # Random horizontal and vertical flips (the book's RandomHorizontalFlip + RandomVerticalFlip).
    flip: bool = True
    # HED stain jitter (Tellez et al. 2019), batched on the training device: per image and stain channel
    # (haematoxylin, eosin, DAB) the concentration c becomes alpha * c + beta, alpha ~ U(1 - hed_scale,
    # 1 + hed_scale), beta ~ U(-hed_shift, hed_shift) in optical-density units. 0, 0 = off (the default).
    hed_scale: float = 0.0
    hed_shift: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.002
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: str = "adamax"
    # "none" (book), "class_weights" (weighted loss) or "sampler" (balanced sampling).
    balance: str = "none"
    amp: bool = True  # CUDA only; bf16 where supported, else fp16 with a GradScaler
    channels_last: bool = True  # CUDA only
    # Where batches come from: "device" = the packed cache resident on the accelerator (flips and
    # normalization there), "packed" = gathered per batch on the host; "auto" = device on CUDA, else
    # packed. Both yield the same batches and flips for the same seed.
    loader: str = "auto"
    # GB the device-resident cache may take; null = half the free GPU memory. Above it: streamed in chunks.
    device_memory_gb: Optional[float] = None
    # torch.compile the model (measure eager vs. compiled first: python -m idc.bench sections=gpu).
    compile: bool = False
    eval_batch_size: int = 256
    # Cap batches per epoch (smoke runs and tests); null = full epoch.
    max_batches: Optional[int] = None
    resume: bool = False
    dist_backend: str = "auto"  # auto: nccl on CUDA, gloo otherwise
    # Run tracking: "csv" (model/history*.csv only, the default) or "tensorboard" (also event files under
    # run.dir/tensorboard/: scalars per step and epoch, evaluate's PR curve, the landscape figures; README).
    logger: str = "csv"


@dataclass
class EvaluateConfig:
    split: str = "test"
    batch_size: int = 256


@dataclass
class LandscapeConfig:
    # Explicit patient ids; empty = the `num_patients` test patients with the most IDC patches.
    patients: List[int] = field(default_factory=list)
    num_patients: int = 2
    split: str = "test"


@dataclass
class ExplainConfig:
    methods: List[str] = field(
        default_factory=lambda: [
            "lime", "vanilla_backprop", "guided_backprop", "integrated_gradients", "smoothgrad",
            "gradcam", "guided_gradcam", "gradcam_pp", "scorecam", "layercam", "rise",
        ]
    )
    # Rows of the test split in eval/predictions.csv order (the book uses [142, 41291]).
    patches: List[int] = field(default_factory=list)
    # Most confident patches per outcome (tp/tn/fp/fn).
    select: Dict[str, int] = field(default_factory=lambda: {"tp": 2, "tn": 2, "fp": 1, "fn": 1})
    image_ids: List[str] = field(default_factory=list)
    target: str = "pred"  # pred | label | <class index>
    cam_layer: str = "layer4"
    batch_size: int = 64
    lime_num_samples: int = 1000
    lime_batch_size: int = 500
    lime_num_features: int = 20
    # Quickshift kernel size of LIME's superpixels (lime's default 4; smaller = finer superpixels).
    lime_kernel_size: float = 4.0
    # What a hidden superpixel shows: black (0, as the book calls lime) | mean (each superpixel its own mean
    # colour, lime's default hide_color=None). docs/explain.md "LIME's hidden superpixels".
    lime_hide_color: str = "black"
    # IG's gradient passes per patch, whatever the baseline: one baseline gets ig_steps points on its path,
    # `expected` ig_steps // ig_expected_k on each of its paths (8 x 6 at the defaults).
    ig_steps: int = 50
    ig_internal_batch_size: int = 512
    # IG's baseline: expected (the default: IG averaged over ig_expected_k random training patches, i.e. expected
    # gradients; chosen on the validation split: docs/explain.md "IG's baseline") | blur (Gaussian, ig_blur_sigma
    # px) | grey (normalized 0; the book's captum default) | black | uniform (noise).
    ig_baseline: str = "expected"
    ig_blur_sigma: float = 5.0
    ig_expected_k: int = 8
    smoothgrad_samples: int = 25
    smoothgrad_stdev: float = 0.15
    rise_num_masks: int = 2000
    rise_cell: int = 8
    rise_p: float = 0.5
    # What RISE's masked pixels become: mean (the training patches' mean colour) | black | grey | white.
    rise_fill: str = "mean"
    num_shards: int = 1
    shard_index: int = 0
    # Only join the shard outputs under explain/shards/ into maps.npz, index.csv and the figures.
    merge: bool = False
    visualize: bool = True
    # Chapter-10 visualizations: activations of this patch (row of the selection) and filter patterns.
    visualize_patch: int = 0
    filter_layers: List[str] = field(default_factory=lambda: ["conv1", "layer1", "layer2", "layer3", "layer4"])
    filter_count: int = 64
    filter_steps: int = 40
    # Seeds torch's RNG before each method (SmoothGrad noise, uniform IG baseline), LIME and RISE.
    seed: int = 0


@dataclass
class AtlasConfig:
    """`make atlas`: attribution landscapes. Every patch of the chosen patients is explained and the maps are
    stitched into the patient's tissue beside its P(IDC) landscape (docs/scale-out.md, docs/viewer.md). Method
    settings come from explain.* (explain.ig_steps, explain.ig_baseline, explain.cam_layer, ...)."""

    methods: List[str] = field(default_factory=lambda: ["gradcam", "integrated_gradients"])
    # Explicit patient ids; empty = every patient of `split` (test, val, train or all).
    patients: List[int] = field(default_factory=list)
    split: str = "test"
    # The class whose evidence is mapped: 1 (IDC, default: a landscape of the evidence for IDC), 0, pred or label.
    target: str = "1"
    batch_size: int = 64
    # Work is split by patient: shard i of n computes the patients assigned to it (balanced by patch count);
    # each patient is written atomically to atlas/patients/<pid>/ and skipped when already done from the
    # same inputs. Under torchrun these come from RANK and WORLD_SIZE.
    num_shards: int = 1
    shard_index: int = 0
    # Only check and join the patients' outputs (every patch exactly once) and draw the figures.
    merge: bool = False
    # Full-resolution overlays (map over tissue) per patient and method: atlas/overlays/<pid>_<method>.jpg.
    overlays: bool = True
    # What is drawn (figures, overlays, viewer): each map's positive part smoothed within its patch by a Gaussian
    # of this many px (0: none); the stored maps stay raw.
    display_sigma: float = 2.0


@dataclass
class SanityConfig:
    # The book's six methods, then the five extra ones.
    methods: List[str] = field(
        default_factory=lambda: [
            "vanilla_backprop", "guided_backprop", "integrated_gradients", "smoothgrad",
            "gradcam", "guided_gradcam", "lime", "gradcam_pp", "scorecam", "layercam", "rise",
        ]
    )
    # Blocks randomized in cascade, top first; `a+b` randomizes modules a and b together (stem conv + BN).
    cascade: List[str] = field(default_factory=lambda: ["fc", "layer4", "layer3", "layer2", "layer1", "conv1+bn1"])
    # model_init (the network's own init scheme, via a freshly built model) | reset_parameters.
    reinit: str = "model_init"
    # Patches of the evaluation cohort (data.cohort), half IDC-positive, one patient at a time: 24 = one patch
    # from each of the default cohort's 24 patients (a verdict needs patients, not patches).
    num_patches: int = 24
    # A randomization test passes when the upper end of the 95% CI of the similarity (Spearman of
    # absolute maps) lies below this threshold: the map changed. CIs: t-intervals on the patient means
    # (idc.scores.inference); below 5 patients "too few patients". See docs/sanity.md.
    threshold: float = 0.5
    # Smooth MPRT (Hedström et al. 2023): maps averaged over this many noisy copies of each patch
    # (noise sd = smprt_noise x the patch's value range), bottom-up cascade.
    smprt_samples: int = 3  # Quantus: 50; ours is bounded by the stage's time budget (docs/sanity.md)
    smprt_noise: float = 0.1
    # N of the sanity patches, half IDC-positive, one per patient (sMPRT costs smprt_samples x the maps);
    # 10 patients: the verdict's false-pass rate is calibrated there (tests/test_inference.py).
    smprt_patches: int = 10
    emprt_bins: int = 100  # Efficient MPRT: histogram bins of the map's discrete entropy
    # The sanity maps (13+ models x every method) use explain.* with these two capped (null = no cap):
    # fewer LIME samples and RISE masks keep `make sanity` within its time budget on 2 CPU cores.
    lime_num_samples: Optional[int] = 300
    rise_num_masks: Optional[int] = 500
    # Data randomization: memorize permuted labels of a fixed subset of training patches.
    random_labels_patches: int = 2048
    random_labels_epochs: int = 60  # the cap
    random_labels_target: float = 0.95
    random_labels_lr: float = 0.001
    random_labels_batch_size: int = 128
    hog_pixels_per_cell: int = 5
    seed: int = 0


@dataclass
class LeaderboardConfig:
    """`make leaderboard`: localization, faithfulness and shortcut scores of every method, variant and
    control row (docs/attribution-evaluation.md). Its randomized-model control rows use the sanity
    stage's fully randomized model (`sanity.cascade`, `sanity.reinit`, `sanity.seed`)."""

    # false: skip the scores (sanity/localization.md says so).
    enabled: bool = True
    # Cap on the IDC-positive patches scored (all eligible ones up to this), taken one patient at a time.
    num_patches: int = 128
    # Which patients: "cohort" (the evaluation cohort, data.cohort: what the board reports) or "val" (the
    # validation split: where a default such as explain.ig_baseline is chosen; docs/explain.md).
    split: str = "cohort"
    # Methods scored: all eleven by default.
    methods: List[str] = field(
        default_factory=lambda: [
            "lime", "vanilla_backprop", "guided_backprop", "integrated_gradients", "smoothgrad",
            "gradcam", "guided_gradcam", "gradcam_pp", "scorecam", "layercam", "rise",
        ]
    )
    # Extra rows: a method with explain overrides, "method:key=value[,key=value]" (keys the method reads).
    variants: List[str] = field(
        default_factory=lambda: [
            "gradcam:cam_layer=layer3", "gradcam_pp:cam_layer=layer3", "scorecam:cam_layer=layer3",
            "layercam:cam_layer=layer3", "lime:lime_kernel_size=2",
        ]
    )
    # Score each method's maps from the fully randomized model as its own control row.
    randomized_controls: bool = True
    # The maps use explain.* with these two capped (null = no cap), as the sanity stage's.
    lime_num_samples: Optional[int] = 300
    rise_num_masks: Optional[int] = 500
    # Pointing game: a maximum within this many pixels of the ground-truth mask counts as a hit.
    pointing_tolerance: int = 2
    # Top-k intersection: k as a share of the patch's pixels.
    top_k_fraction: float = 0.1
    # Deletion curve: deleted pixels become the image's mean colour ("mean"), 0 input ("zero") or a blur ("blur").
    deletion_fill: str = "mean"
    # Gaussian sigma (pixels) of the blurred image: the insertion start and the "blur" deletion fill.
    blur_sigma: float = 5.0
    # Also score faithfulness with pytorch-grad-cam's ROAD (noisy linear imputation), on the first
    # `road_patches` scored patches (its imputation takes seconds per patch and map on a CPU).
    road: bool = True
    road_patches: int = 32
    # Data with a label map (generator v7): the per-nucleus logit drops (each nucleus removed alone: one forward
    # pass per nucleus, ~94 per patch) on the first `nucleus_patches` scored patches, one patient at a time
    # (0: none). 48 = 2 per patient of the default 24-patient cohort; a cap for the stage's 40-minute budget.
    nucleus_patches: int = 48
    # Stain invariance (docs/attribution-evaluation.md, "Stain invariance"): the first `stain_patches` scored
    # patches (64 = one explain batch: 2-3 per patient of the 24-patient cohort) and a copy of each with HED jitter
    # (per stain alpha ~ U(1 - stain_scale, 1 + stain_scale), beta ~ U(-stain_shift, stain_shift) in optical
    # density; 0.05 / 0.05 = Tellez et al.'s HED-light), every map computed again on the copy; pairs whose P(IDC)
    # moved by more than `stain_max_change` are dropped. stain_scale = stain_shift = 0 or stain_patches = 0: no column.
    # Off by default (0): at 64 it adds an estimated 6.7 min, over issue 23's 40-minute budget for sanity +
    # leaderboard at the default; `leaderboard.stain_patches=64` switches it on.
    stain_scale: float = 0.05
    stain_shift: float = 0.05
    stain_max_change: float = 0.05
    stain_patches: int = 0
    # Patient-bootstrap replicates of the rank intervals (every CI of a mean is a t-interval on the patient means).
    bootstrap: int = 1000
    # Relevance variant shown (positive | absolute) and the score that sorts the rows (primary: the localization
    # primary score, nuclear AUROC with a label map, relevance rank with a mask, deletion without masks |
    # nuclear_auroc | nuclear_mass | pointing_game | relevance_mass | relevance_rank | pixel_auroc | top_k |
    # deletion | insertion | insertion_mean | road | nucleus_rank | stain_invariance). It decides nothing: "beats
    # every control" is judged on each question's pre-declared primary score (idc.leaderboard.verdicts.QUESTIONS).
    variant: str = "positive"
    sort: str = "primary"
    # A run dir of data=synthetic_shortcut whose sanity/localization_summary.csv fills the shortcut columns
    # (null: this run's own cue scores, if its data has a cue layer).
    shortcut_run_dir: Optional[str] = None
    seed: int = 0


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    atlas: AtlasConfig = field(default_factory=AtlasConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
    leaderboard: LeaderboardConfig = field(default_factory=LeaderboardConfig)
    seed: int = 24
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)


register_configs()
